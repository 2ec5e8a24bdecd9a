"""``kdcache verify --replay`` of compact encodings: a teacher converted from a float16 teacher replays bit for
bit (as convert made it), direct int8/topk/sample teachers replay, a one-byte change in a compact part that
its checksum record was rewritten to match is caught naming the (sample, view); on another platform (the
card's recorded platform altered) each encoding is checked by what it guarantees about the recomputed
logits: what another platform's round-off may legitimately store passes (an int8 code rounded the other
way, a near-tie swapped into the top K), what lies beyond the bound fails naming the pair, and a sample row
no encoder writes fails as damaged in one line; and verify refuses the replay-only options without
--replay."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from kdcache import encodings
from kdcache.store import Store, checksum
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.helpers import TinyNet

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
DIRECT = {"d8": "int8", "k3": "topk:3", "s8": "sample:8@2"}
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _precompute(out: Path, *extra: str) -> None:
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2",
                         "--seed", "3", "--recipe", RECIPE, "--out", out, *extra)
    assert code == 0, text


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float16 teacher ``tiny`` (the default encoding), converts of it, and the same teacher precomputed
    directly in each compact encoding."""
    out = tmp_path_factory.mktemp("replay") / "s.zarr"
    _precompute(out)
    for name, encoding in DIRECT.items():
        _precompute(out, "--teacher-name", name, "--encoding", encoding)
    for source, encoding, name in (("tiny", "int8", "i8"), ("tiny", "topk:3", "t3"),
                                   ("tiny", "float32", "f32"), ("f32", "int8", "f32i8")):  # f32i8: two converts
        code, text = run_cli("convert", out, "--teacher-name", source, "--encoding", encoding, "--as", name)
        assert code == 0, text
    return out


def _replay_line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"replay {name}:"))


def test_a_teacher_converted_from_float16_replays_bit_for_bit(store: Path) -> None:
    code, text = run_cli("verify", store, "--replay", "4", "--teacher-name", "i8")  # the audit's reproduction
    assert code == 0 and _replay_line(text, "i8").endswith("; bitwise equal"), text
    for name in ("t3", "f32", "f32i8"):
        code, text = run_cli("verify", store, "--replay", "6", "--teacher-name", name)
        assert code == 0 and _replay_line(text, name).endswith("; bitwise equal"), text


def test_directly_precomputed_compact_teachers_replay_bit_for_bit(store: Path) -> None:
    for name in DIRECT:
        code, text = run_cli("verify", store, "--replay", "6", "--teacher-name", name)
        assert code == 0 and _replay_line(text, name).endswith("; bitwise equal"), text


def _first_pair(store: Path) -> tuple[int, int]:
    """The first (sample, view) ``verify --replay`` draws (its seed 0, as kdcache.audit.verify draws them)."""
    s = Store.open(store)
    rng = np.random.default_rng(0)
    return int(rng.integers(s.num_samples)), int(rng.integers(s.num_views))


def _bump(row: np.ndarray) -> np.ndarray:
    """The row of a part with its first value moved by one unit in the last place (floats) or its lowest bit
    flipped (integers: a code or a count; a sample's first slot always holds a drawn class)."""
    row = row.copy()
    if row.dtype.kind == "f":
        row[0] = np.nextafter(row[0], np.inf)
    else:
        row[0] ^= row.dtype.type(1)
    return row


@pytest.mark.parametrize(("name", "part"), [("i8", "q"), ("f32i8", "affine"), ("k3", "topk_values"),
                                            ("s8", "sample_counts")])
def test_a_changed_compact_part_with_its_record_rewritten_fails_replay_naming_the_pair(
        store: Path, tmp_path: Path, name: str, part: str) -> None:
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    assert run_cli("verify", copy, "--replay", "4", "--teacher-name", name)[0] == 0  # before the change
    sample, view = _first_pair(copy)
    s = Store.open(copy)
    start, stop = s.grid.bounds(sample // s.grid.chunk_rows)
    g = zarr.open_group(copy, mode="r+")
    arr = g[f"teachers/{name}/{part}"]
    arr[view, sample] = _bump(arr[view, sample])
    chunk = [g[node][view, start:stop] for _, node in s.part_nodes(name)]
    g[f"teachers/{name}/checksums"][view, sample // s.grid.chunk_rows] = checksum(*chunk)
    code, text = run_cli("verify", copy, "--teacher-name", name)
    assert code == 0, text  # every checksum holds: only a replay can see it
    code, text = run_cli("verify", copy, "--replay", "4", "--teacher-name", name)
    assert code == 1, text
    assert f"BAD: replay of {name}: sample {sample}, view {view} differs from the store" in text, text
    assert "not bitwise equal" in text, text


def test_verify_refuses_replay_options_without_replay(store: Path) -> None:
    code, text = run_cli("verify", store, "--weights", "/nonexistent.pt", "--data", "synthetic:samples=3")
    assert_one_line_error(code, text, "--data and --weights", "--replay N", exit_code=2)
    assert "checked" not in text  # refused before anything was read
    for option, given in (("--weights", "/nonexistent.pt"), ("--data", DATA)):
        code, text = run_cli("verify", store, "--replay", "0", option, given)
        assert_one_line_error(code, text, f"{option} only applies with --replay N", "drop it", exit_code=2)
    code, text = run_cli("verify", store, "--replay", "2", "--teacher-name", "tiny", "--data", DATA)
    assert code == 0, text  # with --replay they apply


# ---------------------------------------------------------------- on another platform

EDGE_DATA = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5"
EDGE = {"f": "float32", "e8": "int8", "e3": "topk:3"}


class _EdgeNet(nn.Module):
    """Rows made to sit on the edges of the compact encodings: class 1 on an int8 rounding boundary (half way
    between codes 155 and 154 of its row) and classes 2 and 3 tied as the 3rd and 4th largest (topk:3's edge)."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = TinyNet(num_classes, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.net(x)
        lo = u[:, 2] + 2.0
        hi = lo + 0.5 + nn.functional.softplus(u[:, 0])
        return torch.stack([hi, hi - 100.5 * ((hi - lo) / 255), lo, lo], dim=1)


def edge(num_classes: int = 4, in_channels: int = 1) -> nn.Module:
    """``import:tests.test_verify_replay:edge``: :class:`_EdgeNet` with fixed weights."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _EdgeNet(num_classes, in_channels)


@pytest.fixture(scope="module")
def edge_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The edge teacher as float32 (its exact output, for the tests to re-encode), int8 and topk:3."""
    out = tmp_path_factory.mktemp("edge") / "s.zarr"
    for name, encoding in EDGE.items():
        code, text = run_cli("precompute", "--data", EDGE_DATA, "--teacher", "import:tests.test_verify_replay:edge",
                             "--views", "2", "--seed", "3", "--recipe", RECIPE, "--out", out, "--teacher-name", name,
                             "--encoding", encoding)
        assert code == 0, text
    return out


def _rewrite_row(store: Path, name: str, sample: int, view: int, parts: dict[str, np.ndarray]) -> None:
    """Store ``parts`` (one row) as row (view, sample) of teacher ``name``, its chunk's checksum rewritten."""
    s = Store.open(store)
    j = sample // s.grid.chunk_rows
    start, stop = s.grid.bounds(j)
    g = zarr.open_group(store, mode="r+")
    for part, row in parts.items():
        g[f"teachers/{name}/{part}"][view, sample] = row[0]
    g[f"teachers/{name}/checksums"][view, j] = checksum(*[g[node][view, start:stop] for _, node in s.part_nodes(name)])


def _elsewhere(store: Path, *names: str) -> None:
    """Record another CPU instruction set on the cards of ``names``: their replay takes the off-platform path."""
    s = Store.open(store, mode="r+")
    for name in names:
        card = s.card(name)
        s.set_card(name, card.replace(platform={**(card.platform or {}), "cpu_capability": "SOMEOTHER"}))


def _stored(store: Path, name: str, sample: int, view: int) -> dict[str, np.ndarray]:
    g = zarr.open_group(store, mode="r")
    s = Store.open(store)
    return {part.name: g[node][view, sample][None] for part, node in s.part_nodes(name)}


def _another_platforms_row(store: Path, name: str, sample: int, view: int) -> dict[str, np.ndarray]:
    """What another platform's round-off may store for the row: the exact logits moved by ~1e-6, encoded; the
    move is placed so that the int8 code of class 1 rounds the other way, or class 3 passes its tie with 2."""
    z = np.asarray(zarr.open_group(store, mode="r")["teachers/f/logits"][view, sample], dtype=np.float32)[None]
    enc, rows = encodings.parse(EDGE[name]), encodings.Rows(seed=3, view=view, samples=np.array([sample]), teacher=name)
    exact = enc.encode(z, rows)
    if name == "e8":
        hi, step = float(exact["affine"][0, 0]), float(exact["affine"][0, 1])
        # Class 1 is 100.5 steps below hi up to float32 round-off: the rounding boundary is right there.
        boundary = hi - (np.floor((hi - float(z[0, 1])) / step) + 0.5) * step
        candidates = [boundary - 1e-6, boundary + 1e-6]  # one of them rounds the other way
    else:
        assert z[0, 2] == z[0, 3]  # the tie, as the edge teacher makes it
        candidates = [float(z[0, 3]) + 1e-6]
    for value in candidates:
        moved = z.copy()
        moved[0, 1 if name == "e8" else 3] = value
        parts = enc.encode(moved, rows)
        if any(not np.array_equal(parts[k], exact[k]) for k in ("q", "topk_ids") if k in parts):
            assert np.abs(moved.astype(np.float64) - z).max() <= 2e-6
            return parts
    raise AssertionError(f"no move of 1e-6 changes the {EDGE[name]} encoding of {z}")


@pytest.mark.parametrize("name", ["e8", "e3"])
def test_on_another_platform_a_code_rounded_the_other_way_or_a_swapped_tie_passes(
        edge_store: Path, tmp_path: Path, name: str) -> None:
    copy = tmp_path / "s.zarr"
    shutil.copytree(edge_store, copy)
    sample, view = _first_pair(copy)
    _rewrite_row(copy, name, sample, view, _another_platforms_row(copy, name, sample, view))
    code, text = run_cli("verify", copy, "--replay", "4", "--teacher-name", name)
    assert code == 1 and "not bitwise equal" in text, text  # on the store's own platform: bits are expected
    _elsewhere(copy, name)
    code, text = run_cli("verify", copy, "--replay", "4", "--teacher-name", name)
    assert code == 0, text
    assert "platform differs" in text and "bits cannot be expected" in text and "checked instead: " in text, text
    assert ("codes themselves may round either way" if name == "e8" else "near-ties within 2 x slack") in text, text


@pytest.mark.parametrize(("name", "part"), [("e8", "q"), ("e3", "topk_values")])
def test_on_another_platform_a_value_beyond_the_bound_fails_naming_the_pair(
        edge_store: Path, tmp_path: Path, name: str, part: str) -> None:
    copy = tmp_path / "s.zarr"
    shutil.copytree(edge_store, copy)
    sample, view = _first_pair(copy)
    parts = _stored(copy, name, sample, view)
    if part == "q":
        parts["q"][0, 1] -= np.uint8(3)  # three quantisation steps: six times the rounding's half step
    else:
        parts["topk_values"][0, 0] = parts["topk_values"][0, 0] * np.float16(1.01)  # 1e-2 relative
    _rewrite_row(copy, name, sample, view, parts)
    _elsewhere(copy, name)
    code, text = run_cli("verify", copy, "--replay", "4", "--teacher-name", name)
    assert code == 1, text
    assert f"BAD: replay of {name}: sample {sample}, view {view} differs from the store (" in text, text
    assert "x the tolerance" in text and "Traceback" not in text, text


def test_on_another_platform_every_teacher_replays_within_its_encodings_rule(store: Path, tmp_path: Path) -> None:
    """Direct and converted (through float16, through float32) teachers: each checked by its rule, the sample
    saying that its draws are compared only on the store's platform."""
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    names = Store.open(copy).teacher_names()
    _elsewhere(copy, *names)
    for name in names:
        code, text = run_cli("verify", copy, "--replay", "6", "--teacher-name", name)
        assert code == 0 and "platform differs" in text, text
    code, text = run_cli("verify", copy, "--replay", "2", "--teacher-name", "s8")
    assert "draws are compared bit for bit only on the store's platform" in text, text
    code, text = run_cli("verify", copy, "--replay", "2", "--teacher-name", "i8")
    assert "+ half an ulp of float16 at that magnitude (float source 'tiny') (worst: " in text, text


def test_a_sample_row_with_a_count_in_an_empty_slot_fails_replay_as_damaged_in_one_line(
        store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    sample, view = _first_pair(copy)
    parts = _stored(copy, "s8", sample, view)
    parts["sample_ids"][0, -1] = np.iinfo(parts["sample_ids"].dtype).max  # the empty-slot marker...
    parts["sample_counts"][0, -1] = max(1, int(parts["sample_counts"][0, -1]))  # ... holding a count
    _rewrite_row(copy, "s8", sample, view, parts)
    for elsewhere in (False, True):
        if elsewhere:
            _elsewhere(copy, "s8")
        code, text = run_cli("verify", copy, "--replay", "4", "--teacher-name", "s8")
        assert code == 1 and "Traceback" not in text, text
        bad = [line for line in text.splitlines() if line.startswith("BAD:")]
        assert len(bad) == 1 and bad[0].startswith(f"BAD: replay of s8: sample {sample}, view {view}: "), text
        assert "the empty-slot marker, not a class (0..3)" in bad[0] and "damaged" in bad[0], text

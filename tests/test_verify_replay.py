"""``kdcache verify --replay`` of compact encodings: a teacher converted from a float16 teacher replays bit for
bit (as convert made it), direct int8/topk/sample teachers replay, a one-byte change in a compact part that
its checksum record was rewritten to match is caught naming the (sample, view); and verify refuses the
replay-only options without --replay."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdcache.store import Store, checksum
from tests.cli_helpers import assert_one_line_error, run_cli

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

"""A damaged chunk is found by `verify`, stops `distill` with one line naming it and what rewrites it, and
running exactly that command repairs the store (logits and view parameters to the bits of an undamaged
copy, a statistic as a new generation with the parameters it was made with)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdcache.store import Store, layout
from tests.cli_helpers import assert_one_line_error, distill_args, precompute_args, run_cli
from tests.stores import rewrite_params

DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"  # as tests/test_cli_exits.py
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
PRECOMPUTE = {"data": DATA, "seed": 3}
DISTILL = {"data": DATA, "val_data": VAL}

# Statistics made with options other than the defaults: the advised command must carry them.
STATS_OPTIONS = ("--grid", "1", "--grid", "2", "--grid", "4", "--tau0", "2", "--tau0", "3")
PRECOMPUTE_FIX = "re-run the same `kdcache precompute` to rewrite it"
# The losses that read each statistic, asking for the parameters it was made with.
READS = {"isats_tau": ("--loss", "isats", "--loss-opt", "grid=[1,2,4]"), "class_table": ("--loss", "fgcr")}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store with statistics, copied by each test before it damages the copy."""
    out = tmp_path_factory.mktemp("repair") / "s.zarr"
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert code == 0, text
    code, text = run_cli("stats", out, *STATS_OPTIONS)
    assert code == 0, text
    return out


def _copy(pristine: Path, tmp_path: Path) -> Path:
    out = tmp_path / "s.zarr"
    shutil.copytree(pristine, out)
    return out


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[5] ^= 0x40  # inside the data of every chunk here (none is compressed)
    path.write_bytes(bytes(raw))


def _stat_node(store: Path, name: str) -> str:
    return layout.stat("tiny", Store.open(store).card("tiny").stats[name]["node"])


def _arrays(store: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(store, mode="r")
    nodes = [layout.VIEW_PARAMS, layout.VIEW_CHECKSUMS, layout.logits("tiny"), layout.logit_checksums("tiny")]
    return {node: np.asarray(g[node][:]) for node in nodes}


def _damaged_distill(store: Path, tmp_path: Path, loss: tuple[str, ...], *needles: str) -> str:
    """Run a distill whose ``loss`` reads the damaged chunk (epoch 1 trains on view 0); its one error line."""
    code, text = run_cli(*distill_args(tmp_path / "run", *loss, store=store, **DISTILL))
    assert_one_line_error(code, text, *needles)
    return next(line for line in text.splitlines() if line.startswith("error:"))


@pytest.mark.parametrize("node", [layout.logits("tiny"), layout.VIEW_PARAMS])
def test_a_damaged_precompute_chunk_is_rewritten_by_the_advised_precompute(pristine: Path, tmp_path: Path,
                                                                            node: str) -> None:
    store = _copy(pristine, tmp_path)
    _flip(layout.chunk_file(store, node, 0, 1, 0))
    code, text = run_cli("verify", store)
    assert code == 1 and f"BAD: {node} view 0 chunk 1 (rows 64-127): checksum mismatch" in text, text
    _damaged_distill(store, tmp_path, ("--loss", "kd"), node, "view 0 chunk 1", PRECOMPUTE_FIX)

    code, text = run_cli(*precompute_args(store, **PRECOMPUTE))  # the same command, as advised
    assert code == 0, text
    code, text = run_cli("verify", store)
    assert code == 0, text
    repaired, original = _arrays(store), _arrays(pristine)
    for name, values in original.items():
        assert np.array_equal(repaired[name], values), name
    assert run_cli(*distill_args(tmp_path / "again", "--loss", "kd", store=store, **DISTILL))[0] == 0


@pytest.mark.parametrize(("name", "chunk", "where"), [
    ("isats_tau", (0, 1, 0), "view 0 chunk 1 (rows 64-127)"),  # (V, N, K): one chunk holds every grid
    ("class_table", (0, 0, 0), "chunk 0 (stored whole)"),
])
def test_a_damaged_statistic_is_rewritten_by_the_advised_stats_run(pristine: Path, tmp_path: Path, name: str,
                                                                   chunk: tuple[int, ...], where: str) -> None:
    store = _copy(pristine, tmp_path)
    node = _stat_node(store, name)
    before = Store.open(store).card("tiny").stats
    _flip(layout.chunk_file(store, node, *chunk))
    code, text = run_cli("verify", store)
    assert code == 1 and f"BAD: {node} {where}: checksum mismatch" in text and "kdcache stats" in text, text
    line = _damaged_distill(store, tmp_path, READS[name], node, where, "re-run `kdcache stats")
    assert "precompute" not in line  # precompute never rewrites a statistic

    advised = re.search(r"re-run `(kdcache stats [^`]+)`", line)
    assert advised is not None, line
    argv = shlex.split(advised.group(1))
    for option in STATS_OPTIONS:  # made with these: the repair must not fall back to the defaults
        assert option in argv, line
    code, text = run_cli(*argv[1:])
    assert code == 0, text
    code, text = run_cli("verify", store)
    assert code == 0, text

    after = Store.open(store).card("tiny").stats
    assert after[name]["node"] != before[name]["node"]  # a new generation, the damaged one unlisted
    for stat in ("isats_tau", "class_table"):  # recomputed with the parameters they were made with
        kept = {k: v for k, v in before[stat].items() if k not in ("node", "computed")}
        assert {k: v for k, v in after[stat].items() if k not in ("node", "computed")} == kept
    old = zarr.open_group(pristine, mode="r")[_stat_node(pristine, name)][...]
    assert np.array_equal(zarr.open_group(store, mode="r")[_stat_node(store, name)][...], old)
    assert run_cli(*distill_args(tmp_path / "again", *READS[name], store=store, **DISTILL))[0] == 0


def test_a_statistic_chunk_cut_short_names_kdcache_stats(pristine: Path, tmp_path: Path) -> None:
    store = _copy(pristine, tmp_path)
    node = _stat_node(store, "isats_tau")
    path = layout.chunk_file(store, node, 0, 1, 0)
    path.write_bytes(path.read_bytes()[:10])
    line = _damaged_distill(store, tmp_path, READS["isats_tau"], node, "view 0 chunk 1", "cannot be decoded",
                            "re-run `kdcache stats")
    assert "precompute" not in line
    code, text = run_cli("verify", store)
    assert code == 1 and f"BAD: {node} view 0 chunk 1 (rows 64-127) cannot be read" in text, text


def test_params_the_seed_no_longer_draws_are_refused_not_rewritten(pristine: Path, tmp_path: Path) -> None:

    store = _copy(pristine, tmp_path)
    rewrite_params(store, 1)  # recorded flips the seed does not draw (another tool made the views)
    chunk = layout.chunk_file(store, layout.VIEW_PARAMS, 0, 1, 0)
    _flip(chunk)
    damaged = chunk.read_bytes()
    code, text = run_cli(*precompute_args(store, **PRECOMPUTE))
    assert_one_line_error(code, text, "views/params view 0 chunk 1", "cannot be rewritten", "new --out")
    assert chunk.read_bytes() == damaged  # a draw that does not hash to the record is never written

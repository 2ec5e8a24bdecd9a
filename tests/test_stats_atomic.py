"""`kdcache stats` replaces statistics atomically: killed anywhere, the card lists only complete, unchanged arrays."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kdcache.store import Store
from kdcache.store.stat_io import RowStatReader, listed, read_static
from tests.cli_helpers import run_cli
from tests.stores import killed, make_store


def _listed_values(path: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """Every statistic the card lists, read through the checksum-verified readers."""
    store = Store.open(path)
    out = {}
    for name, entry in listed(store, "tiny").items():
        params = {k: v for k, v in entry.items() if k not in ("computed", "node")}
        if name == "isats_tau":
            reader = RowStatReader(store, "tiny", name)
            values = np.stack([np.concatenate([reader.read_chunk(v, j) for j in range(store.grid.num_chunks)])
                               for v in range(store.num_views)])
        else:
            values = read_static(store, "tiny", name)[0]
        out[name] = (params, values)
    return out


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("stats")
    one = make_store(base / "one.zarr")
    assert run_cli("stats", one, "--tau0", "3")[0] == 0
    two = base / "two.zarr"
    shutil.copytree(one, two)
    assert run_cli("stats", two, "--tau0", "2")[0] == 0
    return one, two


KILL_POINTS = [
    # while the new arrays are computed
    pytest.param("kdcache.store.stat_io.StatWriter:write_rows", 5, marks=pytest.mark.slow),
    ("kdcache.store.store.Store:_write_manifest", 0),  # new arrays written, card not switched
    ("kdcache.store.stat_io.StatWriter:_prune", 0),  # card switched to the new generation, nothing removed yet
]


@pytest.mark.parametrize(("function", "after"), KILL_POINTS)
def test_killed_stats_rerun_keeps_listed_statistics_whole(tmp_path: Path, refs: tuple[Path, Path], function: str,
                                                          after: int) -> None:
    one, two = refs
    before, full = _listed_values(one), _listed_values(two)
    assert before["class_table"][0]["tau0"] == [3.0] and full["class_table"][0]["tau0"] == [2.0, 3.0]
    work = tmp_path / "work.zarr"
    shutil.copytree(one, work)
    assert killed(["stats", str(work), "--tau0", "2"], function, after) == -9
    now = _listed_values(work)  # every listed statistic passes its checksums
    assert set(now) == {"isats_tau", "class_table", "accuracy"}
    for name, (params, values) in now.items():
        ref = full if params == full[name][0] else before
        assert params == ref[name][0], name
        assert np.array_equal(values, ref[name][1]), name
    started = _nodes(work)  # what the re-run's readers may be using
    code, text = run_cli("stats", work, "--tau0", "2")
    assert code == 0, text
    final = _listed_values(work)
    for name in full:
        assert final[name][0] == full[name][0] and np.array_equal(final[name][1], full[name][1]), name
    # Nothing is left over from the killed run: only the generation the card lists and the one it listed
    # when the re-run started (a reader that opened it earlier may still use it).
    stats_dir = work / "teachers" / "tiny" / "stats"
    assert {p.name for p in stats_dir.iterdir() if p.is_dir()} == _nodes(work) | started


def _nodes(path: Path) -> set[str]:
    return {str(e.get("node") or n) for n, e in listed(Store.open(path), "tiny").items()}


def test_a_reader_keeps_reading_its_generation_across_stats_reruns(tmp_path: Path, refs: tuple[Path, Path]) -> None:
    one, _ = refs
    work = tmp_path / "reader.zarr"
    shutil.copytree(one, work)
    before = _listed_values(work)
    reader_store = Store.open(work)  # a distill that opened the card before the re-runs
    reader = RowStatReader(reader_store, "tiny", "isats_tau")
    assert run_cli("stats", work, "--tau0", "2")[0] == 0
    values = np.stack([np.concatenate([reader.read_chunk(v, j) for j in range(reader_store.grid.num_chunks)])
                       for v in range(reader_store.num_views)])
    assert np.array_equal(values, before["isats_tau"][1])
    assert np.array_equal(read_static(reader_store, "tiny", "class_table")[0], before["class_table"][1])
    # The generation it uses goes only at the run after next; new readers follow the new card.
    assert run_cli("stats", work, "--tau0", "4")[0] == 0
    assert reader.node.rsplit("/", 1)[-1] not in _nodes(work)
    assert not work.joinpath(*reader.node.split("/")).exists()

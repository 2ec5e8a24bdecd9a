"""ISATS τ* for several grids in one store, and the documented isats/fgcr flows run as written.

A store keeps τ* for every grid `kdcache stats --grid` was asked for (as it keeps a class table per
τ0): a run adds a grid and drops none, each loss reads the column of its own grid, and a store made
before (one (V, N) array for one grid) still reads. The docs' commands are run on a small store.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from kdcache import losses
from kdcache.store import Store
from kdcache.store.chunks import checksum
from kdcache.store.stat_io import RowStatReader, listed
from tests.cli_helpers import assert_one_line_error, run_cli, shown_commands

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=256,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5,split=test"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
DEFAULT = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]
NODE = "teachers/tiny/stats/isats_tau"


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small store without statistics (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("grids") / "bare.zarr"
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2",
                         "--seed", "11", "--recipe", RECIPE, "--out", out, "--chunk-rows", "64",
                         "--encoding", "float32")
    assert code == 0, text
    return out


def copy_of(bare: Path, tmp_path: Path, name: str = "store.zarr") -> Path:
    out = tmp_path / name
    shutil.copytree(bare, out)
    return out


def distill(store: Path, out: Path, *loss: str) -> tuple[int, str]:
    return run_cli("distill", store, "--data", DATA, "--val-data", VAL, "--student", "kdcache:mlp", "--epochs", "1",
                   "--batch-size", "64", "--out", out, *loss)


def expected_tau(store: Path, grid: list[float]) -> np.ndarray:
    s = Store.open(store)
    logits = torch.from_numpy(np.asarray(s.logits("tiny")[:], dtype=np.float32))
    labels = torch.from_numpy(s.labels())
    return np.stack([losses.isats_tau_star(logits[v], labels, grid).numpy() for v in range(s.num_views)])


def tau_array(store: Path) -> zarr.Array:
    """The τ* array the card names (its node changes with each `kdcache stats` run)."""
    node = listed(Store.open(store), "tiny")["isats_tau"]["node"]
    return zarr.open_group(store, mode="r")[f"teachers/tiny/stats/{node}"]


def the_fix(text: str) -> list[str]:
    """The `kdcache stats ...` command an error line names, as arguments."""
    found = re.search(r"`kdcache (stats [^`]*)`", text)
    assert found, text
    return shlex.split(found.group(1))


def test_a_second_grid_is_added_and_each_loss_reads_its_own(bare: Path, tmp_path: Path) -> None:
    store = copy_of(bare, tmp_path)
    assert run_cli("stats", store, "--tau0", "3")[0] == 0
    code, text = distill(store, tmp_path / "r124", "--loss", "isats", "--loss-opt", "grid=[1,2,4]")
    fix = f"kdcache stats {store} --teacher-name tiny --grid 1 --grid 2 --grid 4 --tau0 3"
    assert_one_line_error(code, text, "searched over [1, 2, 3, 4, 5, 6, 8], the loss asks [1, 2, 4]", f"`{fix}`")
    code, text = run_cli(*the_fix(text))
    assert code == 0, text
    assert "also kept for grid [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]" in text
    arr = tau_array(store)
    assert arr.shape == (2, 256, 2) and arr.chunks == (1, 64, 2)
    assert arr.attrs["grids"] == [DEFAULT, [1.0, 2.0, 4.0]]  # sorted: not the order they were asked in
    assert listed(Store.open(store), "tiny")["isats_tau"]["grids"] == [DEFAULT, [1.0, 2.0, 4.0]]
    assert np.array_equal(arr[..., 0], expected_tau(store, DEFAULT))
    assert np.array_equal(arr[..., 1], expected_tau(store, [1, 2, 4]))
    for name, loss in (("r124", ["--loss-opt", "grid=[1,2,4]"]), ("rdefault", [])):
        code, text = distill(store, tmp_path / name, "--loss", "isats", *loss)
        assert code == 0, text
    code, text = run_cli("info", store)
    assert "'grids': [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0], [1.0, 2.0, 4.0]]" in text, text
    code, text = run_cli("verify", store)
    assert code == 0, text


def test_the_grids_do_not_depend_on_the_order_they_were_added(bare: Path, tmp_path: Path) -> None:
    a, b = copy_of(bare, tmp_path, "a.zarr"), copy_of(bare, tmp_path, "b.zarr")
    for store, order in ((a, (["--grid", "4", "--grid", "1", "--grid", "2"], [])),
                         (b, ([], ["--grid", "1", "--grid", "2", "--grid", "4"]))):
        for grid in order:
            assert run_cli("stats", store, *grid)[0] == 0
    assert tau_array(a).attrs["grids"] == tau_array(b).attrs["grids"] == [DEFAULT, [1.0, 2.0, 4.0]]
    assert np.array_equal(tau_array(a)[...], tau_array(b)[...])


def test_a_reader_of_one_column_reads_only_that_grid(bare: Path, tmp_path: Path) -> None:
    store = copy_of(bare, tmp_path)
    assert run_cli("stats", store, "--grid", "1", "--grid", "2")[0] == 0
    assert run_cli("stats", store)[0] == 0
    s = Store.open(store)
    got = {k: np.stack([np.concatenate([RowStatReader(s, "tiny", f"isats_tau:{k}").read_chunk(v, j)
                                        for j in range(s.grid.num_chunks)]) for v in range(s.num_views)])
           for k in (0, 1)}
    assert np.array_equal(got[0], expected_tau(store, [1, 2]))
    assert np.array_equal(got[1], expected_tau(store, DEFAULT))


def _as_written_before(store: Path) -> None:
    """Rewrite the store's τ* as a kdcache before several grids wrote it: one (V, N) array, ``grid`` in the card."""
    g = zarr.open_group(store, mode="r+")
    manifest = dict(g.attrs["kdcache"])
    entry = manifest["teachers"]["tiny"]["stats"]["isats_tau"]
    assert entry["grids"] == [DEFAULT]
    tau = np.asarray(g[f"teachers/tiny/stats/{entry['node']}"][..., 0])
    del g[f"teachers/tiny/stats/{entry['node']}"]
    old = g.create_array("teachers/tiny/stats/isats_tau", shape=tau.shape, chunks=(1, 64), dtype="float32",
                         fill_value=np.nan, compressors=None, attributes={"grid": DEFAULT})
    old[...] = tau
    old.attrs["checksums"] = [[f"{checksum(tau[v, j * 64:(j + 1) * 64]):016x}" for j in range(4)]
                              for v in range(tau.shape[0])]
    entry.pop("grids")
    entry.update(grid=DEFAULT, node="isats_tau")
    g.attrs["kdcache"] = manifest


def test_a_store_with_one_grid_from_an_older_kdcache_still_reads(bare: Path, tmp_path: Path) -> None:
    store = copy_of(bare, tmp_path)
    assert run_cli("stats", store, "--tau0", "3")[0] == 0
    _as_written_before(store)
    assert zarr.open_group(store, mode="r")[NODE].shape == (2, 256)
    assert run_cli("verify", store)[0] == 0
    code, text = distill(store, tmp_path / "old", "--loss", "isats")
    assert code == 0, text
    code, text = distill(store, tmp_path / "other", "--loss", "isats", "--loss-opt", "grid=[1,2]")
    assert_one_line_error(code, text, "searched over [1, 2, 3, 4, 5, 6, 8]", "--grid 1 --grid 2 --tau0 3`")
    assert run_cli(*the_fix(text))[0] == 0  # the old grid is kept beside the new one
    entry = listed(Store.open(store), "tiny")["isats_tau"]
    assert entry["grids"] == [[1.0, 2.0], DEFAULT] and "grid" not in entry
    for name, loss in (("new", ["--loss-opt", "grid=[1,2]"]), ("again", [])):
        code, text = distill(store, tmp_path / name, "--loss", "isats", *loss)
        assert code == 0, text


def test_verify_checks_every_grid_column(bare: Path, tmp_path: Path) -> None:
    store = copy_of(bare, tmp_path)
    assert run_cli("stats", store, "--grid", "1", "--grid", "2")[0] == 0
    assert run_cli("stats", store, "--tau0", "3")[0] == 0
    node = listed(Store.open(store), "tiny")["isats_tau"]["node"]
    arr = zarr.open_group(store, mode="r+")[f"teachers/tiny/stats/{node}"]
    assert arr.attrs["grids"] == [[1.0, 2.0], DEFAULT]
    arr[0, 70, 1] = 99.0  # the default grid's column of view 0, chunk 1: the [1, 2] column is intact
    code, text = run_cli("verify", store)
    assert code == 1, text
    assert f"{node} view 0 chunk 1 (rows 64-127): checksum mismatch" in text, text
    assert "--grid 1 --grid 2 --tau0 3`" in text, text  # the command that rewrites it keeps both grids
    # A loss on the other grid reads the same chunks, and they are checked whole.
    code, text = distill(store, tmp_path / "r", "--loss", "isats", "--loss-opt", "grid=[1,2]")
    assert_one_line_error(code, text, "does not match its checksum")


# --------------------------------------------------------------------------- the docs, as written

# The documented flows that read ISATS/FGCR statistics, on a small store: every `kdcache stats` of the
# README and of the doc, then the doc's distill/sweep commands of isats/fgcr runs (a sweep keeps those
# runs and its first seed), then a plain `--loss isats`.
METHODS = ("isats", "fgcr")
COMMANDS = shown_commands()


def _uses_methods(argv: list[str]) -> bool:
    if argv[0] in ("stats", "ensemble"):  # an ensemble is a teacher the flow's statistics then read
        return True
    loss = argv[argv.index("--loss") + 1] if "--loss" in argv else None
    runs = [argv[i + 1].split(":")[1] for i, a in enumerate(argv) if a == "--run"]
    return argv[0] in ("distill", "sweep") and any(m in METHODS for m in [loss, *runs])


def _small(argv: list[str], store: Path, out: Path) -> list[str]:
    """``argv`` on the small store: data, epochs, outputs and seeds shrunk; runs of other methods dropped."""
    small: list[str] = []
    seeds = 0
    i = 0
    while i < len(argv):
        a = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if a.endswith(".zarr"):
            small.append(str(store))  # every store a doc names is this one
        elif a in ("--data", "--val-data", "--epochs", "--out", "--run", "--init-seed"):
            i += 1
            if a == "--run" and value.split(":")[1] not in METHODS:
                pass
            elif a == "--init-seed":
                seeds += 1
                small += [a, value] if seeds == 1 else []
            else:
                small += [a, {"--data": DATA, "--val-data": VAL, "--epochs": "1",
                              "--out": str(out / value.replace("/", "_"))}.get(a, value)]
        else:
            small.append(a)
        i += 1
    return small


FLOWS = {doc: [argv for where, argv in COMMANDS if where.startswith(f"{doc}:") and argv and _uses_methods(argv)]
         for doc in sorted({w.split(":")[0] for w, _ in COMMANDS})}
README_STATS = [argv for argv in FLOWS["README.md"] if argv[0] == "stats"]


def test_the_readme_computes_statistics() -> None:
    assert README_STATS == [["stats", "store.zarr", "--tau0", "3"]]
    assert any("isats:isats:grid=[1,2,4],lam=0.5" in argv for argv in FLOWS["cli.md"])  # the example


@pytest.mark.parametrize("doc", [d for d, flow in FLOWS.items() if d != "README.md" and flow])
def test_each_documented_isats_and_fgcr_flow_works_as_written(doc: str, bare: Path, tmp_path: Path) -> None:
    store = copy_of(bare, tmp_path)
    # An ensemble and what reads it run on their own copy holding the members the ensemble names (more
    # teachers of the same views); the rest of the flow on a store with the one teacher, as documented.
    ensembles = [argv for argv in FLOWS[doc] if argv[0] == "ensemble"]
    derived = {argv[argv.index("--as") + 1] for argv in ensembles}
    on_ensemble = [argv for argv in FLOWS[doc] if argv[0] == "ensemble"
                   or any(argv[i + 1] in derived for i, a in enumerate(argv[:-1]) if a == "--teacher-name")]
    for argv in [*README_STATS, *(argv for argv in FLOWS[doc] if argv not in on_ensemble)]:
        code, text = run_cli(*_small(argv, store, tmp_path / "runs"))
        assert code == 0, f"{doc}: kdcache {shlex.join(argv)}\n{text}"
    if on_ensemble:
        members = copy_of(bare, tmp_path, "members.zarr")
        for name in sorted({argv[i + 1] for argv in ensembles for i, a in enumerate(argv) if a == "--teacher-name"}):
            code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views",
                                 "2", "--seed", "11", "--recipe", RECIPE, "--out", members, "--chunk-rows", "64",
                                 "--encoding", "float32", "--teacher-name", name)
            assert code == 0, text
        for argv in on_ensemble:
            code, text = run_cli(*_small(argv, members, tmp_path / "runs"))
            assert code == 0, f"{doc}: kdcache {shlex.join(argv)}\n{text}"
    code, text = distill(store, tmp_path / "plain", "--loss", "isats")
    assert code == 0, text

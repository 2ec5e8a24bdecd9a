"""The store is the record: readers render the recorded view params, verify every chunk, replay values,
and a resume compares the teacher's identity (program and weights hashes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import tests.helpers as helpers
from kdcache.data import open_data
from kdcache.distill.cached_rows import DEFAULT_WINDOW, epoch_plan
from kdcache.models import run_model
from kdcache.store import LOCK_NAME, Store, checksum
from kdcache.views import Render, ViewDataset, load_recipe
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.cli_helpers import RECIPE
from tests.stores import DATA, VAL, killed, make_store, rewrite_params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _render(data: str, seed: int, key: tuple) -> torch.Tensor:
    recipe = load_recipe(RECIPE)
    return ViewDataset(open_data(data), recipe, seed, [recipe.render])[key]["images"][0]


def test_cached_distill_trains_on_the_recorded_params_not_the_seed(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    params = rewrite_params(store, 1)
    helpers.RECORDED_INPUTS.clear()
    code, text = run_cli("distill", store, "--data", DATA, "--val-data", VAL, "--student",
                         "import:tests.helpers:recording", "--loss", "kd", "--epochs", "1", "--out", tmp_path / "r",
                         "--batch-size", "32", "--seed", "11")
    assert code == 0, text
    seen = torch.cat(helpers.RECORDED_INPUTS)
    plan = epoch_plan(11, 1, 256, 3, "cycle", DEFAULT_WINDOW)
    expected = torch.stack([_render(DATA, 11, (int(s), int(plan.views[s]), params[plan.views[s], s]))
                            for s in plan.order])
    assert torch.equal(seen, expected)
    # The seed draws other views for about half the samples: drawing again would have been caught.
    drawn = torch.stack([_render(DATA, 11, (int(s), int(plan.views[s]))) for s in plan.order[:64]])
    assert not torch.equal(drawn, expected[:64])


def test_second_teacher_and_replay_use_the_recorded_params(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    params = rewrite_params(store, 1)
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "3",
                         "--seed", "11", "--recipe", RECIPE,
                         "--out", store, "--chunk-rows", "64", "--encoding", "float32", "--teacher-name", "second")
    assert code == 0, text
    model = helpers.tiny(4, 1).eval()
    s = Store.open(store)
    for v in range(3):
        x = torch.stack([_render(DATA, 11, (i, v, params[v, i])) for i in range(64)])  # chunk 0 = one micro-batch
        assert np.array_equal(s.logits("second")[v, :64], run_model(model, x, micro_batch=64).numpy())
    # The first teacher scored the seed's views, which the record no longer says: replay catches it.
    code, text = run_cli("verify", store, "--replay", "8", "--teacher-name", "tiny")
    assert code == 1 and "sample" in text and "differs from the store" in text
    code, text = run_cli("verify", store, "--replay", "8", "--teacher-name", "second")
    assert code == 0 and "bitwise equal" in text, text


@pytest.mark.parametrize("node", ["teachers/tiny/logits", "views/params"])
def test_a_corrupted_chunk_stops_distill_naming_it(tmp_path: Path, node: str) -> None:
    store = make_store(tmp_path / "s.zarr")
    chunk = store.joinpath(*node.split("/"), "c", "1", "2", "0")
    raw = bytearray(chunk.read_bytes())
    raw[5] ^= 0x40
    chunk.write_bytes(bytes(raw))
    code, text = run_cli("distill", store, "--data", DATA, "--val-data", VAL, "--student", "import:tests.helpers:tiny",
                         "--loss", "kd", "--epochs", "2", "--out", tmp_path / "r", "--batch-size", "32")
    assert_one_line_error(code, text, node, "view 1 chunk 2", "checksum")
    assert (tmp_path / "r" / "metrics.jsonl").read_text().count("\n") == 1  # epoch 1 (view 0) was trained


def test_one_ulp_change_fails_replay_naming_the_pair(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    assert run_cli("verify", store, "--replay", "4")[0] == 0
    g = zarr.open_group(store, mode="r+")
    logits = g["teachers/tiny/logits"][:]
    moved = np.nextafter(logits, np.float32(np.inf))
    g["teachers/tiny/logits"][:] = moved
    rows = Store.open(store).grid.chunk_rows
    for v in range(3):
        for j in range(4):
            g["teachers/tiny/checksums"][v, j] = checksum(moved[v, j * rows : (j + 1) * rows])
    code, text = run_cli("verify", store)
    assert code == 0, text  # every checksum holds: only a replay can see it
    code, text = run_cli("verify", store, "--replay", "4")
    assert code == 1 and "BAD: replay of tiny: sample" in text and "bitwise" in text, text


def test_replay_from_another_directory_and_moved_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    torch.save(helpers.tiny(4, 1).state_dict(), work / "w.pt")
    monkeypatch.chdir(work)
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--weights", "w.pt",
                         "--views", "2", "--seed", "3", "--recipe", RECIPE, "--out", "s.zarr", "--chunk-rows", "64")
    assert code == 0, text
    assert Store.open("s.zarr").card().weights == str(work / "w.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, text = run_cli("verify", work / "s.zarr", "--replay", "3")
    assert code == 0 and "bitwise equal" in text, text
    (elsewhere / "moved").mkdir()
    shutil.move(work / "w.pt", elsewhere / "moved" / "w.pt")
    assert_one_line_error(*run_cli("verify", work / "s.zarr", "--replay", "3"), "--weights")
    code, text = run_cli("verify", work / "s.zarr", "--replay", "3", "--weights", "moved/w.pt")
    assert code == 0, text
    torch.save(helpers.wrong_width(3, 1).state_dict(), elsewhere / "other.pt")  # other weights, same shapes
    assert_one_line_error(*run_cli("verify", work / "s.zarr", "--replay", "3", "--weights", "other.pt"), "SHA-256")


def _torchscript(path: Path, seed: int) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.jit.script(helpers.TinyNet(4, 1)).save(str(path))


def test_changed_teacher_program_is_refused_on_resume(tmp_path: Path) -> None:
    program = tmp_path / "teacher.ts"
    _torchscript(program, 0)
    out = tmp_path / "s.zarr"
    args = ["precompute", "--data", DATA, "--teacher", f"torchscript:{program}", "--views", "3", "--seed", "1",
            "--recipe", RECIPE, "--out", str(out), "--chunk-rows", "64", "--batch-size", "64"]
    assert killed(args, "kdcache.store.store.Store:write_chunk", 3) == -9
    assert Store.open(out).status == "writing"
    files = lambda: {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_NAME}  # noqa: E731
    before = files()
    _torchscript(program, 1)  # another model at the same path
    code, text = run_cli(*args)
    assert_one_line_error(code, text, "program_sha256", "made differently")
    assert files() == before
    _torchscript(program, 0)  # the original again: resumes and completes
    code, text = run_cli(*args)
    assert code == 0 and "already stored" in text, text


def test_weightless_zoo_teacher_is_refused_unless_random_init(tmp_path: Path) -> None:
    args = ["precompute", "--data", DATA, "--teacher", "kdcache:cnn_small", "--views", "1", "--seed", "1",
            "--recipe", RECIPE, "--out", tmp_path / "s.zarr", "--chunk-rows", "64"]
    assert_one_line_error(*run_cli(*args), "--weights", "--random-init")
    assert not (tmp_path / "s.zarr" / "zarr.json").exists()
    code, text = run_cli(*args, "--random-init")
    assert code == 0, text
    assert Store.open(tmp_path / "s.zarr").card().random_init is True
    assert "UNTRAINED" in run_cli("info", tmp_path / "s.zarr")[1]


@pytest.mark.parametrize("workers", ["-1", "-5"])
def test_bad_workers_value_is_one_line(tmp_path: Path, workers: str) -> None:
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "1",
                         "--recipe", RECIPE, "--out", tmp_path / "s.zarr", "--workers", workers)
    assert code == 2 and "Traceback" not in text and "workers" in text.lower(), text
    assert not (tmp_path / "s.zarr").exists()


def test_precompute_library_refuses_bad_values(tmp_path: Path) -> None:
    from kdcache.errors import UsageError
    from kdcache.precompute.run import TeacherRequest, precompute

    for bad in ({"workers": -1}, {"batch_size": 0}, {"views": 0}, {"chunk_rows": 0}, {"encoding": "int4"}):
        kwargs = {"data": DATA, "teachers": [TeacherRequest("import:tests.helpers:tiny")], "views": 1, "seed": 0,
                  "out": tmp_path / "x.zarr", "progress": False, **bad}
        with pytest.raises(UsageError):
            precompute(**kwargs)
    assert not (tmp_path / "x.zarr").exists()


def test_render_of_recorded_params_is_what_student_gets(tmp_path: Path) -> None:
    """Sanity of the helper above: a (sample, view, params) key renders the given params."""
    recipe = load_recipe(RECIPE)
    ds = ViewDataset(open_data(DATA), recipe, 11, [Render.from_dict(recipe.render.to_dict())])
    a = ds[(5, 0, np.array([2, 2, 1], np.int32))]["images"][0]
    b = ds[(5, 0, np.array([2, 2, 0], np.int32))]["images"][0]
    assert torch.equal(a, torch.flip(b, dims=[-1]))


def _set_platform(store: Path, cpu: str) -> None:
    g = zarr.open_group(store, mode="r+")
    m = dict(g.attrs["kdcache"])
    m["versions"] = {**m["versions"], "cpu_capability": cpu}
    # Replay compares with the platform the teacher was scored on (its card), not the manifest's.
    for card in m["teachers"].values():
        card["platform"] = {**card["platform"], "cpu_capability": cpu}
    g.attrs["kdcache"] = m


def _shift_logits(store: Path, delta: float) -> None:
    g = zarr.open_group(store, mode="r+")
    moved = (g["teachers/tiny/logits"][:] + np.float32(delta)).astype(np.float32)
    g["teachers/tiny/logits"][:] = moved
    rows = Store.open(store).grid.chunk_rows
    for v in range(moved.shape[0]):
        for j in range(g["teachers/tiny/checksums"].shape[1]):
            g["teachers/tiny/checksums"][v, j] = checksum(moved[v, j * rows : (j + 1) * rows])


def test_replay_on_another_platform_uses_the_stated_tolerance(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr")
    _set_platform(store, "SOMEOTHER")
    code, text = run_cli("verify", store, "--replay", "4")
    assert code == 0 and "bits cannot be expected" in text and "cpu_capability" in text, text
    _shift_logits(store, 1e-3)  # far beyond half an ulp + 1e-4 of the row's scale
    code, text = run_cli("verify", store, "--replay", "4")
    assert code == 1 and "x the tolerance" in text and "BAD: replay of tiny: sample" in text, text


def test_rows_stay_in_lockstep_with_worker_prefetch(tmp_path: Path) -> None:
    """The DataLoader takes key lists ahead (2 workers); each step still gets its own batch's teacher rows."""
    import json

    store = make_store(tmp_path / "s.zarr")
    losses = {}
    for workers in ("0", "2"):
        code, text = run_cli("distill", store, "--data", DATA, "--val-data", VAL, "--student",
                             "import:tests.helpers:tiny", "--loss", "kd", "--epochs", "2", "--out",
                             tmp_path / f"w{workers}", "--batch-size", "16", "--seed", "3", "--workers", workers,
                             "--view-policy", "random")
        assert code == 0, text
        losses[workers] = [json.loads(line)["loss"] for line in (tmp_path / f"w{workers}" / "steps.jsonl")
                           .read_text().splitlines()]
    assert len(losses["0"]) == 32 and losses["0"] == losses["2"]

"""`kdcache distill`, `stats` and `train-teacher` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from kdcache import losses
from kdcache.distill.cached_rows import epoch_plan
from kdcache.store import Store
from tests.cli_helpers import assert_one_line_error, distill_args, run_cli
from tests.stores import make_store

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=256,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5,split=test"
TEACHER = "import:tests.helpers:tiny"
STUDENT = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
DISTILL = {"data": DATA, "val_data": VAL, "student": STUDENT, "epochs": 2, "seed": 11, "lr": 0.1}




@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = make_store(tmp_path_factory.mktemp("d") / "store.zarr")
    code, text = run_cli("stats", out, "--tau0", "3")
    assert code == 0, text
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_distill_writes_metrics_weights_record_and_checkpoint(tmp_path: Path, store: Path) -> None:
    out = tmp_path / "run"
    code, text = run_cli(*distill_args(out, store, loss="nkd", **DISTILL))
    assert code == 0, text
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "train_soft", "val_top1", "val_top5", "lr", "samples_per_s"):
        assert key in rows[0], key
    state = torch.load(out / "final.pt", weights_only=True)
    assert isinstance(state, dict) and all(torch.is_tensor(v) for v in state.values())
    record = json.loads((out / "run.json").read_text())
    assert record["args"]["loss"] == "nkd" and record["store_manifest_hash"].startswith("sha256:")
    assert "torch" in record["versions"]
    assert (out / "checkpoint.pt").exists()
    assert "final val top-1" in text


@pytest.mark.parametrize("loss", [n for n in losses.names() if n not in ("nkd",)])
def test_every_loss_trains_from_the_store(tmp_path: Path, store: Path, loss: str) -> None:
    extra = ["--loss-opt", "beta=0.01"] if loss == "dtd" else []
    code, text = run_cli(*distill_args(tmp_path / loss, store, "--epochs", "1", *extra, loss=loss, **DISTILL))
    assert code == 0, text
    row = read_jsonl(tmp_path / loss / "metrics.jsonl")[0]
    assert np.isfinite(row["train_loss"])


def test_cached_float32_and_online_agree_step_by_step(tmp_path: Path, store: Path) -> None:
    cached, online = tmp_path / "cached", tmp_path / "online"
    assert run_cli(*distill_args(cached, store, loss="isats", **DISTILL))[0] == 0
    code, text = run_cli(*distill_args(online, "--teacher", TEACHER, "--views", "3", "--recipe", RECIPE, loss="isats",
                                       **DISTILL))
    assert code == 0, text
    # The store's seed (11) is the online --seed: the same views, the same order.
    a, b = read_jsonl(cached / "steps.jsonl"), read_jsonl(online / "steps.jsonl")
    assert len(a) == len(b) > 10
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa = torch.load(cached / "final.pt", weights_only=True)
    wb = torch.load(online / "final.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_online_view_seed_replays_a_store_made_with_another_seed(tmp_path: Path, store: Path) -> None:
    # The store was made with seed 11; all three runs shuffle with --seed 5.
    def with_seed(args: list) -> list:
        args[args.index("--seed") + 1] = "5"
        return args

    def losses_of(run: Path) -> list[float]:
        return [r["loss"] for r in read_jsonl(run / "steps.jsonl")]

    cached, online, other = tmp_path / "cached", tmp_path / "online", tmp_path / "other"
    assert run_cli(*with_seed(distill_args(cached, store, "--epochs", "1", loss="kd", **DISTILL)))[0] == 0
    live = ["--teacher", TEACHER, "--views", "3", "--recipe", RECIPE, "--epochs", "1"]
    code, text = run_cli(*with_seed(distill_args(online, *live, "--view-seed", "11", loss="kd", **DISTILL)))
    assert code == 0, text
    assert losses_of(cached) == losses_of(online)
    # Without --view-seed the online views are seed 5's: other views, other losses.
    assert run_cli(*with_seed(distill_args(other, *live, loss="kd", **DISTILL)))[0] == 0
    assert losses_of(other) != losses_of(online)


def test_online_view_seed_matches_a_seed_7_store_step_by_step_and_bitwise(tmp_path: Path) -> None:
    """A store made with --seed 7, distilled with --seed 0, equals online --seed 0 --view-seed 7."""
    made = run_cli("precompute", "--data", DATA, "--teacher", TEACHER, "--views", "3", "--seed", "7",
                        "--recipe", RECIPE, "--out", tmp_path / "s7.zarr", "--chunk-rows", "64",
                        "--encoding", "float32")
    assert made[0] == 0, made[1]

    def seed0(args: list) -> list:
        args[args.index("--seed") + 1] = "0"
        return args

    cached, online = tmp_path / "cached", tmp_path / "online"
    assert run_cli(*seed0(distill_args(cached, tmp_path / "s7.zarr", loss="kd", **DISTILL)))[0] == 0
    code, text = run_cli(*seed0(distill_args(online, "--teacher", TEACHER, "--views", "3", "--recipe", RECIPE,
                                             "--view-seed", "7", loss="kd", **DISTILL)))
    assert code == 0, text
    a, b = read_jsonl(cached / "steps.jsonl"), read_jsonl(online / "steps.jsonl")
    assert len(a) == len(b) > 10
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa = torch.load(cached / "final.pt", weights_only=True)
    wb = torch.load(online / "final.pt", weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    "data,needle",
    [
        ("synthetic:samples=200,classes=4,size=12,channels=1,seed=5", "200 samples"),  # other samples
        ("synthetic:samples=256,classes=4,size=12,channels=1,seed=6", "fingerprint"),  # other images
        ("synthetic:samples=256,classes=4,size=12,channels=1,seed=5,split=test", "fingerprint"),  # other split
        ("synthetic:samples=256,classes=3,size=12,channels=1,seed=5", "classes"),  # other class count
    ],
)
def test_store_refuses_other_data(tmp_path: Path, store: Path, data: str, needle: str) -> None:
    args = distill_args(tmp_path / "r", store, loss="kd", **DISTILL)
    args[args.index("--data") + 1] = data
    if "classes=3" in data:
        args[args.index("--val-data") + 1] = data.replace("samples=256", "samples=30")
    assert_one_line_error(*run_cli(*args), needle)
    assert not (tmp_path / "r").exists()


def test_incomplete_store_and_missing_stats_are_refused(tmp_path: Path) -> None:
    out = make_store(tmp_path / "s.zarr")
    assert_one_line_error(*run_cli(*distill_args(tmp_path / "r1", out, loss="fgcr", **DISTILL)), "kdcache stats")
    g = zarr.open_group(out, mode="r+")
    m = dict(g.attrs["kdcache"])
    m["teachers"]["tiny"]["status"] = "writing"
    g.attrs["kdcache"] = m
    assert_one_line_error(*run_cli(*distill_args(tmp_path / "r2", out, loss="kd", **DISTILL)), "still being written")


def test_stats_equal_the_in_memory_functions(store: Path) -> None:
    s = Store.open(store)
    logits = torch.from_numpy(np.asarray(s.logits("tiny")[:], dtype=np.float32))  # (V, N, C)
    labels = torch.from_numpy(s.labels())
    g = zarr.open_group(store, mode="r")
    tau = np.asarray(g["teachers/tiny/stats/isats_tau"][..., 0])  # (V, N, K): column k searched over grids[k]
    assert g["teachers/tiny/stats/isats_tau"].attrs["grids"] == [[1, 2, 3, 4, 5, 6, 8]]
    for v in range(s.num_views):
        expect = losses.isats_tau_star(logits[v], labels, (1, 2, 3, 4, 5, 6, 8)).numpy()
        assert np.array_equal(tau[v], expect.astype(np.float32))
    flat = logits.reshape(-1, logits.shape[2])
    table = losses.class_table(flat, labels.repeat(s.num_views), 4, 3.0)
    stored = np.asarray(g["teachers/tiny/stats/class_table"][0])
    np.testing.assert_allclose(stored, table.numpy(), rtol=1e-6, atol=1e-7)
    assert list(g["teachers/tiny/stats/class_table"].attrs["tau0"]) == [3.0]
    code, text = run_cli("info", store)
    assert "isats_tau" in text and "class_table" in text


def test_stats_refuse_an_unfinished_store(tmp_path: Path) -> None:
    out = make_store(tmp_path / "s.zarr")
    g = zarr.open_group(out, mode="r+")
    m = dict(g.attrs["kdcache"])
    m["teachers"]["tiny"]["status"] = "writing"
    g.attrs["kdcache"] = m
    assert_one_line_error(*run_cli("stats", out), "still being written")


def test_epoch_plan_is_a_pure_function() -> None:
    a = epoch_plan(3, 2, 1000, 4, "random", window=128)
    b = epoch_plan(3, 2, 1000, 4, "random", window=128)
    assert np.array_equal(a.order, b.order) and np.array_equal(a.views, b.views)
    assert sorted(a.order.tolist()) == list(range(1000))
    c = epoch_plan(3, 3, 1000, 4, "random", window=128)
    assert not np.array_equal(a.order, c.order)
    assert set(epoch_plan(0, 2, 10, 4, "cycle").views.tolist()) == {1}


def test_train_teacher_records_regt_in_card_and_store(tmp_path: Path) -> None:
    ckpt = tmp_path / "t.pt"
    code, text = run_cli("train-teacher", "--data", DATA, "--val-data", VAL, "--model", TEACHER, "--epochs", "1",
                         "--out", ckpt, "--regt", "0.01", "--recipe", RECIPE)
    assert code == 0, text
    from kdcache.models import load_checkpoint

    card = load_checkpoint(ckpt)["card"]
    assert card["trained"]["loss"] == "regt" and card["trained"]["regt_beta"] == 0.01
    out = make_store(tmp_path / "s.zarr", "--weights", str(ckpt))
    assert Store.open(out).card().trained["regt_beta"] == 0.01


@pytest.mark.parametrize("policy", ["cycle", "random"])
def test_cached_rows_follow_the_plan_exactly(store: Path, policy: str) -> None:
    from kdcache.distill.cached_rows import CachedRows

    s = Store.open(store)
    everything = torch.from_numpy(np.asarray(s.logits("tiny")[:], dtype=np.float32))
    tau = torch.from_numpy(np.asarray(zarr.open_group(store, mode="r")["teachers/tiny/stats/isats_tau"][:]))
    # Window 100 over 256 samples: the short last window may be visited first, batches straddle windows.
    for epoch in (1, 2, 3):
        plan = epoch_plan(4, epoch, 256, 3, policy, window=100)
        rows = list(CachedRows(s, "tiny", ["isats_tau"]).iterate(plan, 48))
        got = torch.cat([r["teacher_logits"] for r in rows])
        got_tau = torch.cat([r["isats_tau"] for r in rows])
        order, views = torch.from_numpy(plan.order), torch.from_numpy(plan.views)
        assert torch.equal(got, everything[views[order], order])
        assert torch.equal(got_tau, tau[views[order], order])


def test_resume_survives_another_teacher_joining_the_store(tmp_path: Path) -> None:
    out = make_store(tmp_path / "shared.zarr")
    run = tmp_path / "run"
    args = distill_args(run, out, "--epochs", "1", loss="kd", **DISTILL)
    assert run_cli(*args)[0] == 0
    # Another team adds a teacher to the shared store; this run's inputs are unchanged.
    make_store(out, "--teacher-name", "other")
    code, text = run_cli(*args, "--resume", "--teacher-name", "tiny")
    assert code == 1 and "teacher_name" in text  # a different argument is still refused
    args_named = distill_args(tmp_path / "run2", out, "--epochs", "1", "--teacher-name", "tiny", loss="kd", **DISTILL)
    assert run_cli(*args_named)[0] == 0
    make_store(out, "--teacher-name", "third")
    code, text = run_cli(*args_named[:-2], "--epochs", "2", "--teacher-name", "tiny", "--resume")
    assert code == 1 and "epochs" in text
    code, text = run_cli(*args_named, "--resume")
    assert code == 0, text

"""`kdcache sweep` and `distill --init-seed`, as a user runs them.

The guarantee under test: every (run, init seed) student of a sweep ends bitwise identical to the
single `kdcache distill` run with the same options and `--init-seed`, in the same files. The student
(`tests.sweep_models`) draws its initial weights from torch's global generator and uses dropout, and
the runs cover a plain loss (kd), a per-row store statistic (isats' tau*) and extra networks (slkd),
so sharing a generator, reading the wrong statistics or building in another order would show.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.cli_helpers import assert_one_line_error, run_cli
from tests.resume_helpers import assert_same_tensors, kill_part_way, read_jsonl, without_timings

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=256,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5,split=test"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
STUDENT = "import:tests.sweep_models:dropout_net"
# (sweep --run, the equivalent distill options)
RUNS = {
    "kd-t2": ("kd-t2:kd:temperature=2", ["--loss", "kd", "--loss-opt", "temperature=2"]),
    "isats": ("isats:isats:grid=[1,2,4],lam=0.5", ["--loss", "isats", "--loss-opt", "grid=[1,2,4]",
                                                   "--loss-opt", "lam=0.5"]),
    "slkd": ("slkd:slkd", ["--loss", "slkd"]),
}
SEEDS = (1, 2)
COMMON = ["--data", DATA, "--val-data", VAL, "--epochs", "2", "--batch-size", "32", "--seed", "11", "--lr", "0.1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "store.zarr"
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "3",
                         "--seed", "11", "--recipe", RECIPE, "--out", out, "--chunk-rows", "64",
                         "--encoding", "float32")
    assert code == 0, text
    code, text = run_cli("stats", out, "--tau0", "3", "--grid", "1", "--grid", "2", "--grid", "4")
    assert code == 0, text
    return out


def sweep_args(store: Path, out: Path, *extra: object, student: str = STUDENT) -> list[object]:
    runs = [a for spec, _ in RUNS.values() for a in ("--run", spec)]
    seeds = [a for s in SEEDS for a in ("--init-seed", s)]
    return ["sweep", store, "--student", student, *COMMON, *runs, *seeds, "--out", out, *extra]


@pytest.fixture(scope="module")
def swept(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("swept") / "sweep"
    code, text = run_cli(*sweep_args(store, out))
    assert code == 0, text
    assert "6 students" in text, text
    return out


def test_every_sweep_student_equals_its_single_distill_run(store: Path, swept: Path, tmp_path: Path) -> None:
    for name, (_, options) in RUNS.items():
        for seed in SEEDS:
            single = tmp_path / f"{name}-s{seed}"
            code, text = run_cli("distill", store, "--student", STUDENT, *COMMON, *options,
                                 "--init-seed", seed, "--out", single)
            assert code == 0, text
            student = swept / f"{name}-s{seed}"
            assert sorted(p.name for p in student.iterdir()) == sorted(p.name for p in single.iterdir())
            assert_same_tensors(torch.load(student / "final.pt", weights_only=True),
                                torch.load(single / "final.pt", weights_only=True))
            assert without_timings(read_jsonl(student / "metrics.jsonl")) == \
                without_timings(read_jsonl(single / "metrics.jsonl"))
            assert (student / "steps.jsonl").read_text() == (single / "steps.jsonl").read_text()
            a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (student, single))
            for module in a["modules"]:  # the SLKD networks too
                assert_same_tensors(a["modules"][module], b["modules"][module])
            assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # the student's own generator
            ra, rb = (json.loads((d / "run.json").read_text()) for d in (student, single))
            assert ra["args"].pop("out") != rb["args"].pop("out")
            assert ra == rb  # identity, init seed, input hashes, cards: the same record
            assert ra["identity"]["init_seed"] == seed


def test_the_leaderboard_lists_every_student_best_first(swept: Path) -> None:
    with (swept / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["student"] for r in rows) == sorted(f"{n}-s{s}" for n in RUNS for s in SEEDS)
    for r in rows:
        final = read_jsonl(swept / r["student"] / "metrics.jsonl")[-1]
        assert float(r["val_top1"]) == final["val_top1"]
        assert r["epochs"] == "2"
    top1 = [float(r["val_top1"]) for r in rows]
    assert top1 == sorted(top1, reverse=True)
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 7)]
    page = (swept / "leaderboard.md").read_text()
    for r in rows:
        assert f"| {r['student']} |" in page
    for name in RUNS:
        assert f"| {name} | 2 |" in page  # the per-run mean over both seeds


def test_distill_resume_accepts_a_sweep_students_directory(store: Path, swept: Path, tmp_path: Path) -> None:
    copy = tmp_path / "kd-t2-s1"
    shutil.copytree(swept / "kd-t2-s1", copy)
    code, text = run_cli("distill", store, "--student", STUDENT, *COMMON, *RUNS["kd-t2"][1],
                         "--init-seed", 1, "--out", copy, "--resume")
    assert code == 0, text
    assert "epochs already done" in " ".join(text.split())
    code, text = run_cli("distill", store, "--student", STUDENT, *COMMON, *RUNS["kd-t2"][1],
                         "--init-seed", 2, "--out", copy, "--resume")
    assert_one_line_error(code, text, "init_seed: 1 -> 2")


def test_init_seed_sets_initialisation_and_seed_the_data_order(store: Path, tmp_path: Path) -> None:
    def run(out: str, *extra: object) -> dict[str, torch.Tensor]:
        code, text = run_cli("distill", store, "--student", STUDENT, "--loss", "kd", "--data", DATA,
                             "--val-data", VAL, "--epochs", "1", "--batch-size", "64", "--out", tmp_path / out,
                             *extra)
        assert code == 0, text
        return torch.load(tmp_path / out / "final.pt", weights_only=True)

    default = run("default", "--seed", 3)
    explicit = run("explicit", "--seed", 3, "--init-seed", 3)
    other_init = run("other-init", "--seed", 3, "--init-seed", 4)
    other_order = run("other-order", "--seed", 4, "--init-seed", 3)
    assert_same_tensors(default, explicit)  # the default is --seed
    assert json.loads((tmp_path / "default" / "run.json").read_text())["identity"]["init_seed"] == 3
    assert not torch.equal(default["conv.weight"], other_init["conv.weight"])
    assert not torch.equal(default["conv.weight"], other_order["conv.weight"])
    first = read_jsonl(tmp_path / "other-order" / "steps.jsonl")[0]
    # Same init, other order: the first step sees other samples, so another loss.
    assert first["loss"] != read_jsonl(tmp_path / "default" / "steps.jsonl")[0]["loss"]


@pytest.mark.parametrize("args, needle, exit_code", [
    (["--run", "a:kd", "--run", "a:nkd"], "repeated: a", 2),
    (["--run", "a"], "NAME:LOSS", 2),
    (["--run", "a:nope"], "unknown loss 'nope'", 2),
    (["--run", "a/b:kd"], "names the run's directory", 2),
    (["--run", "a:kd:temperature=-1"], "temperature", 1),
    (["--run", "a:kd", "--init-seed", "1", "--init-seed", "1"], "must differ", 2),
])
def test_bad_runs_are_one_line_before_anything_is_written(store: Path, tmp_path: Path, args: list[str],
                                                          needle: str, exit_code: int) -> None:
    code, text = run_cli("sweep", store, "--student", STUDENT, *COMMON, *args, "--out", tmp_path / "s")
    assert_one_line_error(code, text, needle, exit_code=exit_code)
    assert not (tmp_path / "s").exists()


def test_an_existing_sweep_needs_resume_and_resume_needs_a_sweep(store: Path, swept: Path, tmp_path: Path) -> None:
    code, text = run_cli("sweep", store, "--student", STUDENT, *COMMON, "--run", "kd-t2:kd", "--out", swept)
    assert_one_line_error(code, text, "--resume")
    code, text = run_cli("sweep", store, "--student", STUDENT, *COMMON, "--run", "a:kd", "--out",
                         tmp_path / "none", "--resume")
    assert_one_line_error(code, text, "no sweep to resume")


def test_a_sweep_stopped_between_students_resumes_each_from_its_own_epoch(
        store: Path, swept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stopped (Ctrl-C) in epoch 2's end after 3 of the 6 students saved it: on --resume those 3 skip
    # epoch 2 while the others train it again, and every student ends as in an uninterrupted sweep.
    from kdcache.engine import Engine

    out = tmp_path / "stopped"
    original = Engine.end_epoch
    ended: list[int] = []

    def end_epoch(self: Engine, tally, progress: bool = True):  # type: ignore[no-untyped-def]
        if tally.epoch == 2 and len([e for e in ended if e == 2]) == 3:
            raise KeyboardInterrupt
        ended.append(tally.epoch)
        return original(self, tally, progress)

    monkeypatch.setattr(Engine, "end_epoch", end_epoch)
    code, text = run_cli(*sweep_args(store, out))
    assert code == 130, text
    epochs = sorted(len(read_jsonl(d / "metrics.jsonl")) for d in out.iterdir() if d.is_dir())
    assert epochs == [1, 1, 1, 2, 2, 2]
    monkeypatch.setattr(Engine, "end_epoch", original)
    code, text = run_cli(*sweep_args(store, out, "--resume"))
    assert code == 0, text
    for name in RUNS:
        for seed in SEEDS:
            student = f"{name}-s{seed}"
            assert_same_tensors(torch.load(out / student / "final.pt", weights_only=True),
                                torch.load(swept / student / "final.pt", weights_only=True))
            assert without_timings(read_jsonl(out / student / "metrics.jsonl")) == \
                without_timings(read_jsonl(swept / student / "metrics.jsonl"))
            assert (out / student / "steps.jsonl").read_text() == (swept / student / "steps.jsonl").read_text()


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_bits_of_an_uninterrupted_one(store: Path, swept: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "killed"
    slow = "import:tests.sweep_models:slow_dropout_net"  # the same network, slow enough to be killed
    # Two of the three runs: a sweep's student does not depend on which other students it trains beside.
    runs = ("kd-t2", "isats")
    args = ["sweep", store, "--student", slow, *COMMON, *(a for n in runs for a in ("--run", RUNS[n][0])),
            *(a for s in SEEDS for a in ("--init-seed", s)), "--out", out]
    kill_part_way(args, out / "kd-t2-s1" / "metrics.jsonl", after_epochs=1, fraction=0.5,
                  final=out / "leaderboard.md", clean=lambda: shutil.rmtree(out, ignore_errors=True))
    code, text = run_cli(*args, "--resume")
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "report") == \
        sorted(f"{n}-s{s}" for n in runs for s in SEEDS)
    for name in runs:
        for seed in SEEDS:
            student = f"{name}-s{seed}"
            assert_same_tensors(torch.load(out / student / "final.pt", weights_only=True),
                                torch.load(swept / student / "final.pt", weights_only=True))
            assert without_timings(read_jsonl(out / student / "metrics.jsonl")) == \
                without_timings(read_jsonl(swept / student / "metrics.jsonl"))


def test_runs_decoding_a_topk_store_at_their_own_temperatures_equal_their_single_runs(tmp_path: Path) -> None:
    # A topk store is decoded at each loss's temperature: two KD temperatures need two readings.
    store = tmp_path / "topk.zarr"
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2",
                         "--seed", "11", "--recipe", RECIPE, "--out", store, "--chunk-rows", "64",
                         "--encoding", "topk:2")
    assert code == 0, text
    common = ["--student", STUDENT, "--data", DATA, "--val-data", VAL, "--epochs", "1", "--batch-size", "64"]
    code, text = run_cli("sweep", store, *common, "--run", "t1:kd:temperature=1", "--run", "t4:kd:temperature=4",
                         "--init-seed", 3, "--out", tmp_path / "sweep")
    assert code == 0, text
    finals = []
    for name, t in (("t1", 1), ("t4", 4)):
        code, text = run_cli("distill", store, *common, "--loss", "kd", "--loss-opt", f"temperature={t}",
                             "--init-seed", 3, "--out", tmp_path / name)
        assert code == 0, text
        assert (tmp_path / "sweep" / f"{name}-s3" / "steps.jsonl").read_text() == \
            (tmp_path / name / "steps.jsonl").read_text()
        finals.append(torch.load(tmp_path / name / "final.pt", weights_only=True))
        assert_same_tensors(torch.load(tmp_path / "sweep" / f"{name}-s3" / "final.pt", weights_only=True), finals[-1])


def test_a_student_that_cannot_be_built_leaves_nothing_behind(store: Path, tmp_path: Path) -> None:
    code, text = run_cli("sweep", store, "--student", "import:tests.sweep_models:no_such_model", *COMMON,
                         "--run", "kd:kd", "--out", tmp_path / "s")
    assert_one_line_error(code, text, "no_such_model")
    assert not (tmp_path / "s").exists()


def test_a_seed_added_on_resume_trains_beside_the_finished_students(store: Path, swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "grown"
    shutil.copytree(swept, out)
    before = (out / "kd-t2-s1" / "final.pt").read_bytes()
    code, text = run_cli(*sweep_args(store, out, "--init-seed", 3, "--resume"))
    assert code == 0, text
    assert "9 students" in text, text
    assert (out / "kd-t2-s1" / "final.pt").read_bytes() == before  # finished students are not trained again
    single = tmp_path / "single"
    code, text = run_cli("distill", store, "--student", STUDENT, *COMMON, *RUNS["slkd"][1], "--init-seed", 3,
                         "--out", single)
    assert code == 0, text
    assert_same_tensors(torch.load(out / "slkd-s3" / "final.pt", weights_only=True),
                        torch.load(single / "final.pt", weights_only=True))
    assert (out / "slkd-s3" / "steps.jsonl").read_text() == (single / "steps.jsonl").read_text()

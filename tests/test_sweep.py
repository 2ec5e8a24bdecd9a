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
    (["--run", "a:kd:temperature=-1"], "temperature", 2),
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

    def end_epoch(self: Engine, tally, progress: bool = True, seconds=None):  # type: ignore[no-untyped-def]
        if tally.epoch == 2 and len([e for e in ended if e == 2]) == 3:
            raise KeyboardInterrupt
        ended.append(tally.epoch)
        return original(self, tally, progress, seconds)

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


def student_args(store: Path, out: Path, runs: tuple[str, ...], *extra: object) -> list[object]:
    """A sweep of some of RUNS over SEEDS (a student does not depend on which others train beside it)."""
    return ["sweep", store, "--student", STUDENT, *COMMON, *(a for n in runs for a in ("--run", RUNS[n][0])),
            *(a for s in SEEDS for a in ("--init-seed", s)), "--out", out, *extra]


def assert_students_equal(a: Path, b: Path, students: list[str]) -> None:
    for student in students:
        assert_same_tensors(torch.load(a / student / "final.pt", weights_only=True),
                            torch.load(b / student / "final.pt", weights_only=True))
        assert without_timings(read_jsonl(a / student / "metrics.jsonl")) == \
            without_timings(read_jsonl(b / student / "metrics.jsonl"))
        assert (a / student / "steps.jsonl").read_text() == (b / student / "steps.jsonl").read_text()


@pytest.mark.parametrize("stop_at", [
    8 * 4 + 3 * 4 + 2,  # epoch 2, in its 4th batch after 2 of the 4 students stepped on it
    5 * 4 + 1,  # epoch 1 (no student has saved a state yet), in its 6th batch
])
def test_a_sweep_interrupted_mid_epoch_resumes_to_the_bits_of_an_uninterrupted_one(
        store: Path, swept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_at: int) -> None:
    # The fast, in-process twin of the SIGKILL test below: Ctrl-C inside a student's step, part-way
    # through an epoch (8 batches of 32 per epoch, 4 students per batch), then --resume.
    from kdcache.engine import Engine

    out = tmp_path / "interrupted"
    runs = ("kd-t2", "isats")
    original = Engine.train_step
    calls = [0]

    def train_step(self: Engine, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] > stop_at:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "train_step", train_step)
    code, text = run_cli(*student_args(store, out, runs))
    assert code == 130, text
    saved = stop_at // 32  # epochs every student finished before the interrupt
    for d in (out / f"{n}-s{s}" for n in runs for s in SEEDS):
        assert len(read_jsonl(d / "metrics.jsonl")) == saved
        assert (d / "checkpoint.pt").exists() == (saved > 0)
    monkeypatch.setattr(Engine, "train_step", original)
    code, text = run_cli(*student_args(store, out, runs, "--resume"))
    assert code == 0, text
    assert_students_equal(out, swept, [f"{n}-s{s}" for n in runs for s in SEEDS])


@pytest.mark.parametrize("drop, needle", [
    ("run", "(isats-s1, isats-s2; missing --run isats)"),
    ("seed", "(kd-t2-s2, isats-s2, slkd-s2; missing --init-seed 2)"),
])
def test_a_resume_that_drops_students_is_refused_before_anything_is_written(
        store: Path, swept: Path, tmp_path: Path, drop: str, needle: str) -> None:
    out = tmp_path / "copy"
    shutil.copytree(swept, out)
    before = (out / "sweep.json").read_bytes(), (out / "leaderboard.csv").read_bytes()
    runs = [a for n, (spec, _) in RUNS.items() if not (drop == "run" and n == "isats") for a in ("--run", spec)]
    seeds = ["--init-seed", 1] if drop == "seed" else [a for s in SEEDS for a in ("--init-seed", s)]
    code, text = run_cli("sweep", store, "--student", STUDENT, *COMMON, *runs, *seeds, "--out", out, "--resume")
    assert_one_line_error(code, text, "would drop", needle, "pass them again, or use a new --out")
    assert ((out / "sweep.json").read_bytes(), (out / "leaderboard.csv").read_bytes()) == before


@pytest.mark.parametrize("change, needle", [
    ({"kd-t2": "kd-t2:kd:temperature=3"}, "run 'kd-t2' differs from the sweep's"),
    ({"kd-t2": "kd-t2:nkd:temperature=2"}, "loss: 'kd' -> 'nkd'"),
    ({"--lr": "0.2"}, "optim.lr: 0.1 -> 0.2"),
    ({"--precision": "bf16"}, "precision: 'fp32' -> 'bf16'"),
])
def test_a_resume_with_changed_options_is_refused_in_one_line(store: Path, swept: Path, tmp_path: Path,
                                                              change: dict[str, str], needle: str) -> None:
    out = tmp_path / "copy"
    shutil.copytree(swept, out)
    before = (out / "sweep.json").read_bytes()
    runs = [a for n, (spec, _) in RUNS.items() for a in ("--run", change.get(n, spec))]
    common, extra = list(COMMON), []
    for flag, v in change.items():
        if flag in common:
            common[common.index(flag) + 1] = v
        elif flag.startswith("--"):
            extra += [flag, v]
    code, text = run_cli("sweep", store, "--student", STUDENT, *common, *runs, *extra,
                         *(a for s in SEEDS for a in ("--init-seed", s)), "--out", out, "--resume")
    assert_one_line_error(code, text, needle, "or use a new --out")
    assert (out / "sweep.json").read_bytes() == before


def test_a_run_added_on_resume_trains_beside_the_finished_students(store: Path, swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "grown"
    shutil.copytree(swept, out)
    before = (out / "isats-s2" / "final.pt").read_bytes()
    code, text = run_cli(*sweep_args(store, out, "--run", "kd-t4:kd:temperature=4", "--resume"))
    assert code == 0, text
    assert "8 students" in text, text
    assert (out / "isats-s2" / "final.pt").read_bytes() == before  # finished students are not trained again
    record = json.loads((out / "sweep.json").read_text())
    assert record["students"][-2:] == ["kd-t4-s1", "kd-t4-s2"]
    with (out / "leaderboard.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 8
    single = tmp_path / "single"
    code, text = run_cli("distill", store, "--student", STUDENT, *COMMON, "--loss", "kd", "--loss-opt",
                         "temperature=4", "--init-seed", 2, "--out", single)
    assert code == 0, text
    assert_same_tensors(torch.load(out / "kd-t4-s2" / "final.pt", weights_only=True),
                        torch.load(single / "final.pt", weights_only=True))
    assert (out / "kd-t4-s2" / "steps.jsonl").read_text() == (single / "steps.jsonl").read_text()


def test_a_new_students_cluttered_directory_is_refused_before_anything_is_written(
        store: Path, swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(swept, out)
    (out / "kd-t4-s2").mkdir()
    (out / "kd-t4-s2" / "notes.txt").write_text("not a run")
    before = (out / "sweep.json").read_bytes()
    code, text = run_cli(*sweep_args(store, out, "--run", "kd-t4:kd:temperature=4", "--resume"))
    assert_one_line_error(code, text, "kd-t4-s2 already holds files but no run.json", "move it away")
    assert (out / "sweep.json").read_bytes() == before
    assert not (out / "kd-t4-s1").exists()


def test_the_leaderboard_csv_round_trips_through_csv_and_json(swept: Path) -> None:
    with (swept / "leaderboard.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    opts = {r["student"]: json.loads(r["loss_opts"]) for r in rows}
    assert opts["isats-s1"] == {"grid": [1, 2, 4], "lam": 0.5}
    assert opts["kd-t2-s2"] == {"temperature": 2}
    assert opts["slkd-s1"] == {}
    record = json.loads((swept / "sweep.json").read_text())
    assert {r["name"]: r["loss_opts"] for r in record["runs"]} == \
        {r["run"]: json.loads(r["loss_opts"]) for r in rows}


def test_a_bf16_sweep_student_equals_its_single_bf16_distill_run(store: Path, swept: Path, tmp_path: Path) -> None:
    code, text = run_cli("sweep", store, "--student", STUDENT, *COMMON, "--run", RUNS["kd-t2"][0], "--init-seed", 1,
                         "--precision", "bf16", "--out", tmp_path / "sweep")
    assert code == 0, text
    code, text = run_cli("distill", store, "--student", STUDENT, *COMMON, *RUNS["kd-t2"][1], "--init-seed", 1,
                         "--precision", "bf16", "--out", tmp_path / "single")
    assert code == 0, text
    student, single = tmp_path / "sweep" / "kd-t2-s1", tmp_path / "single"
    assert_same_tensors(torch.load(student / "final.pt", weights_only=True),
                        torch.load(single / "final.pt", weights_only=True))
    assert (student / "steps.jsonl").read_text() == (single / "steps.jsonl").read_text()
    ra, rb = (json.loads((d / "run.json").read_text()) for d in (student, single))
    assert ra["args"].pop("out") != rb["args"].pop("out")
    assert ra == rb
    assert ra["identity"]["precision"] == ra["distributed"]["precision"] == "bf16"
    # bf16 did take effect: the fp32 student of the same run and seed ends elsewhere.
    assert not torch.equal(torch.load(student / "final.pt", weights_only=True)["conv.weight"],
                           torch.load(swept / "kd-t2-s1" / "final.pt", weights_only=True)["conv.weight"])
    # One seed per run: the per-run line says n=1 and shows no spread.
    assert "| kd-t2 | 1 | " in (page := (tmp_path / "sweep" / "leaderboard.md").read_text())
    assert "(n=1, no spread) |" in page and "±" not in page.split("| run |")[1]


def test_every_student_records_the_time_of_the_shared_pass(store: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Each student's end of epoch (evaluation, logs, checkpoint) is made 0.2 s slower: a student's clock
    # must not run through the ends of the students before it.
    import time

    from kdcache.engine import Engine

    original = Engine.end_epoch

    def end_epoch(self: Engine, tally, progress: bool = True, seconds=None):  # type: ignore[no-untyped-def]
        row = original(self, tally, progress, seconds)
        time.sleep(0.2)
        return row

    monkeypatch.setattr(Engine, "end_epoch", end_epoch)
    code, text = run_cli("sweep", store, "--student", STUDENT, *COMMON, "--run", RUNS["kd-t2"][0],
                         *(a for s in (1, 2, 3) for a in ("--init-seed", s)), "--out", tmp_path / "s")
    assert code == 0, text
    rows = [read_jsonl(tmp_path / "s" / f"kd-t2-s{s}" / "metrics.jsonl") for s in (1, 2, 3)]
    for epoch in range(2):
        seconds = [r[epoch]["epoch_seconds"] for r in rows]
        assert max(seconds) - min(seconds) < 0.05, seconds
        for r in rows:
            assert r[epoch]["samples_per_s"] == pytest.approx(256 / r[epoch]["epoch_seconds"])

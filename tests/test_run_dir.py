"""A run's directory (kdcache.engine.run_dir): one writer at a time, resumes that compare resolved
hyper-parameters, validation data checked against the model before anything is written, and a
report that refuses records two writers mixed.

The two-writer tests start two real `kdcache` processes at once. Their student (or teacher) is
`tests.helpers:gated`, whose training steps wait until the test opens a gate file: the process that
takes the run's lock first holds it for as long as the test wants, so the other one meets a held lock
whatever the machine's speed, and the test checks the records once the gate opens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kdcache.distill.run import DistillConfig, distill
from kdcache.engine import OptimConfig
from kdcache.engine.run_dir import RunDir
from kdcache.errors import RunBusyError
from kdcache.precompute.run import TeacherRequest, precompute
from kdcache.distill.sweep import SweepConfig, SweepRun, sweep
from tests.cli_helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
GATED = "import:tests.helpers:gated"
EPOCHS = 2
STEPS_PER_EPOCH = 128 // 32
COMMON = ["--data", DATA, "--val-data", VAL, "--epochs", EPOCHS, "--batch-size", 32]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rundir") / "store.zarr"
    precompute(data=DATA, teachers=[TeacherRequest(TINY)], views=2, seed=0, out=out, progress=False)
    return out


def _config(store: Path, out: Path, **kw: object) -> DistillConfig:
    base: dict = dict(data=DATA, val_data=VAL, student=TINY, loss="kd", epochs=EPOCHS, out=out, store=str(store),
                      batch_size=32, optim=OptimConfig(epochs=EPOCHS))
    return DistillConfig(**{**base, **kw})


def _start(args: list[object], gate: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KDCACHE_TEST_GATE": str(gate)}
    return subprocess.Popen([sys.executable, "-m", "kdcache_cli.main", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _race(args: list[object], gate: Path) -> tuple[tuple[int, str], tuple[int, str, int]]:
    """Start two `kdcache ARGS` together; the first to end (the gate is shut, so it did not train) is the
    refused one; then open the gate. Returns (its exit code and output) and (the other's, and its pid)."""
    procs = [_start(args, gate) for _ in range(2)]
    try:
        deadline = time.time() + 300
        while all(p.poll() is None for p in procs):
            assert time.time() < deadline, "neither process ended: both are training (no writer lock?)"
            time.sleep(0.05)
        refused = next(p for p in procs if p.poll() is not None)
        other = next(p for p in procs if p is not refused)
        gate.touch()
        out, err = other.communicate(timeout=300)
        r_out, r_err = refused.communicate()
        return (refused.returncode, r_out + r_err), (other.returncode, out + err, other.pid)
    finally:
        gate.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _assert_refused_naming_the_holder(refused: tuple[int, str], other: tuple[int, str, int]) -> None:
    assert other[0] == 0, other[1]
    # Exit 1 with one line naming the holder, as a store's second writer is refused.
    assert_one_line_error(*refused, "being written by another kdcache process", f"pid {other[2]} on ")


def _epochs(run: Path, metrics: str = "metrics.jsonl", steps: str = "steps.jsonl") -> tuple[list[int], int]:
    rows = [json.loads(line) for line in (run / metrics).read_text().splitlines()]
    return [r["epoch"] for r in rows], len((run / steps).read_text().splitlines())


def test_two_distill_resumes_at_once_one_is_refused_naming_the_holder(store: Path, tmp_path: Path) -> None:
    run, gate = tmp_path / "run", tmp_path / "gate"
    distill(_config(store, run, student=GATED), progress=False)
    # What a run killed in its first epoch leaves: its record and empty logs, no training state yet.
    for name in ("checkpoint.pt", "final.pt", "summary.json"):
        (run / name).unlink()
    for name in ("metrics.jsonl", "steps.jsonl"):
        (run / name).write_text("")
    refused, other = _race(["distill", store, "--student", GATED, *COMMON, "--out", run, "--resume"], gate)
    _assert_refused_naming_the_holder(refused, other)
    assert _epochs(run) == ([1, 2], EPOCHS * STEPS_PER_EPOCH)  # each epoch once, each step once
    assert (run / "summary.json").exists()


def test_two_sweep_resumes_at_once_one_is_refused_naming_the_holder(store: Path, tmp_path: Path) -> None:
    out, gate = tmp_path / "sweep", tmp_path / "gate"
    sweep(SweepConfig(store=str(store), data=DATA, val_data=VAL, student=GATED, runs=[SweepRun("kd", "kd")],
                      init_seeds=[0], epochs=EPOCHS, out=out, batch_size=32, optim=OptimConfig(epochs=EPOCHS)),
          progress=False)
    # The resume adds a run: its student trains from epoch 1 (gated) while the sweep holds its locks.
    args = ["sweep", store, "--student", GATED, *COMMON, "--run", "kd:kd", "--run", "nkd:nkd", "--init-seed", 0,
            "--out", out, "--resume"]
    refused, other = _race(args, gate)
    _assert_refused_naming_the_holder(refused, other)
    for student in ("kd-s0", "nkd-s0"):
        assert _epochs(out / student) == ([1, 2], EPOCHS * STEPS_PER_EPOCH), student


def test_two_train_teachers_at_once_one_is_refused_naming_the_holder(tmp_path: Path) -> None:
    out, gate = tmp_path / "t.pt", tmp_path / "gate"
    args = ["train-teacher", "--model", GATED, *COMMON, "--out", out]
    refused, other = _race(args, gate)
    _assert_refused_naming_the_holder(refused, other)
    assert _epochs(tmp_path, "t.pt.metrics.jsonl", "t.pt.steps.jsonl") == ([1, 2], EPOCHS * STEPS_PER_EPOCH)
    assert out.exists() and not (tmp_path / "t.pt.state.pt").exists()
    assert not (tmp_path / ".t.pt.lock").exists()  # the finished teacher has no lock beside it


def test_a_second_writer_in_one_process_is_refused_and_the_lock_outlives_nothing(store: Path,
                                                                                   tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    record = {"identity": {"loss": "kd", "loss_opts": {}}}
    with run.open(record, resume=False):
        with pytest.raises(RunBusyError, match=r"being written by another kdcache process \(pid \d+ on "):
            RunDir(tmp_path / "run").open(record, resume=True)
    # Released: the run resumes, and the lock file does not count as a file that blocks a new run elsewhere.
    RunDir(tmp_path / "run").open(record, resume=True).close()
    fresh = tmp_path / "fresh"
    RunDir(fresh).acquire()
    RunDir(fresh).check_new()


def test_report_refuses_a_run_whose_epochs_repeat(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "kd-s0"
    distill(_config(store, run), progress=False)
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([rows[0], rows[1], rows[1]]) + "\n")  # two writers' records
    code, text = run_cli("report", run, "--out", tmp_path / "report")
    assert_one_line_error(code, text, "repeats epoch(s) 2", "two processes wrote this run")
    assert not (tmp_path / "report").exists()


def test_distill_resume_compares_resolved_loss_options(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    distill(_config(store, run), progress=False)
    base = ["distill", store, "--student", TINY, *COMMON, "--out", run, "--loss", "kd", "--resume"]
    code, text = run_cli(*base, "--loss-opt", "ce_weight=0.1")  # kd's default, spelled out
    assert code == 0 and "already done" in text, text
    assert_one_line_error(*run_cli(*base, "--loss-opt", "ce_weight=0.2"), "ce_weight", "0.1", "0.2")


def test_sweep_resume_compares_resolved_loss_options(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    sweep(SweepConfig(store=str(store), data=DATA, val_data=VAL, student=TINY, runs=[SweepRun("kd", "kd")],
                      init_seeds=[0], epochs=EPOCHS, out=out, batch_size=32, optim=OptimConfig(epochs=EPOCHS)),
          progress=False)
    base = ["sweep", store, "--student", TINY, *COMMON, "--init-seed", 0, "--out", out, "--resume"]
    code, text = run_cli(*base, "--run", "kd:kd:ce_weight=0.1,temperature=4")
    assert code == 0, text
    assert_one_line_error(*run_cli(*base, "--run", "kd:kd:ce_weight=0.2"), "ce_weight")


def test_a_sweep_students_options_are_its_distill_runs() -> None:
    cfg = SweepConfig(store="s.zarr", data=DATA, val_data=VAL, student=TINY, runs=[SweepRun("a", "kd", {"x": 1})],
                      init_seeds=[3], epochs=2, out=Path("o"), window=7, micro_batch=5, precision="bf16",
                      allow_approximate_encoding=True, view_policy="random", workers=2)
    student = cfg.student_config(cfg.runs[0], 3)
    shared = {f: getattr(cfg, f) for f in ("store", "data", "val_data", "student", "epochs", "window", "micro_batch",
                                           "precision", "allow_approximate_encoding", "view_policy", "workers")}
    assert {f: getattr(student, f) for f in shared} == shared
    assert (student.loss, student.loss_opts, student.init_seed, student.out) == ("kd", {"x": 1}, 3, Path("o/a-s3"))


# -- validation data the model cannot take: one line, exit 2, before anything is written -----------

VAL_RGB = "synthetic:samples=32,classes=4,size=12,channels=3,seed=5,split=test"
VAL_16 = "synthetic:samples=32,classes=4,size=16,channels=1,seed=5,split=test"


@pytest.mark.parametrize("command", ["distill", "sweep", "train-teacher"])
def test_validation_images_with_other_channels_are_refused_before_anything_is_written(
        store: Path, tmp_path: Path, command: str) -> None:
    out = tmp_path / "out" / ("t.pt" if command == "train-teacher" else "run")
    head = {"distill": ["distill", store, "--student", TINY],
            "sweep": ["sweep", store, "--student", TINY, "--run", "kd:kd"],
            "train-teacher": ["train-teacher", "--model", TINY]}[command]
    code, text = run_cli(*head, "--data", DATA, "--val-data", VAL_RGB, "--epochs", 1, "--out", out)
    assert_one_line_error(code, text, "--val-data", "3-channel", "1-channel", exit_code=2)
    assert not (tmp_path / "out").exists()


def test_validation_images_of_a_size_a_fixed_size_student_cannot_take_are_refused(store: Path,
                                                                                  tmp_path: Path) -> None:
    code, text = run_cli("distill", store, "--student", "import:tests.helpers:fixed_12", "--data", DATA,
                         "--val-data", VAL_16, "--epochs", 1, "--out", tmp_path / "run")
    assert_one_line_error(code, text, "--val-data", "1x16x16", exit_code=2)
    assert not (tmp_path / "run").exists()


def _folder(root: Path, grey_first: bool) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(3):
            (root / c).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            Image.fromarray(pixels[..., 0]).save(root / c / f"{i}.png") if grey_first and (c, i) == ("a", 0) \
                else image.save(root / c / f"{i}.png")
    return root


def test_an_imagefolder_whose_first_image_is_grey_is_refused_as_validation_data(tmp_path: Path) -> None:
    train, val = _folder(tmp_path / "train", False), _folder(tmp_path / "val", True)
    out = tmp_path / "out" / "t.pt"
    code, text = run_cli("train-teacher", "--model", TINY, "--data", f"imagefolder:{train}",
                         "--val-data", f"imagefolder:{val}", "--recipe", ROOT / "tests" / "data" / "recipe-small.json",
                         "--epochs", 1, "--out", out)
    assert_one_line_error(code, text, "1-channel", "3-channel", "channels=3", exit_code=2)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["distill", "sweep", "train-teacher"])
def test_a_model_that_cannot_take_the_datas_channels_is_a_usage_error_before_anything_is_written(
        store: Path, tmp_path: Path, command: str) -> None:
    # torchvision's resnet18 takes 3-channel images; this data has 1 channel (its factory gets no in_channels).
    resnet = "import:torchvision.models:resnet18"
    out = tmp_path / "out" / ("t.pt" if command == "train-teacher" else "run")
    head = {"distill": ["distill", store, "--student", resnet],
            "sweep": ["sweep", store, "--student", resnet, "--run", "kd:kd"],
            "train-teacher": ["train-teacher", "--model", resnet]}[command]
    code, text = run_cli(*head, "--data", DATA, "--val-data", VAL, "--epochs", 1, "--out", out)
    assert_one_line_error(code, text, "failed on a batch of shape", "1, 12, 12", exit_code=2)
    assert not (tmp_path / "out").exists()

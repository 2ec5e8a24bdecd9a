"""`kdcache train-teacher` killed at any point and run again ends bitwise identical to an uninterrupted run.

No monkeypatching: a real subprocess is SIGKILLed, and the same command is
run again. The kills land after a learning-rate milestone, where a resume
that re-steps the schedule on top of the restored optimizer decays the
learning rate twice.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from kdcache.models import load_checkpoint
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.resume_helpers import (
    ROOT,
    assert_same_tensors,
    kill_part_way,
    read_jsonl,
    without_timings,
)

DATA = "synthetic:samples=256,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5,split=test"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
EPOCHS = 4  # multistep milestones at epochs 2, 3 and 4


def teacher_args(out: Path, schedule: str = "multistep", *extra: object) -> list[object]:
    return ["train-teacher", "--data", DATA, "--val-data", VAL, "--model", "import:tests.helpers:tiny",
            "--epochs", EPOCHS, "--out", out, "--recipe", RECIPE, "--batch-size", 32, "--lr", 0.1,
            "--schedule", schedule, "--seed", 3, *extra]


def logs(out: Path) -> tuple[list[dict], list[dict]]:
    return (without_timings(read_jsonl(out.with_name(out.name + ".metrics.jsonl"))),
            read_jsonl(out.with_name(out.name + ".steps.jsonl")))


def reference(tmp: Path, schedule: str, *extra: object) -> Path:
    out = tmp / f"ref-{schedule}" / "t.pt"
    code, text = run_cli(*teacher_args(out, schedule, *extra))
    assert code == 0, text
    return out


def assert_same_teacher(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert_same_tensors(ca["state_dict"], cb["state_dict"])
    assert ca["card"]["trained"] == cb["card"]["trained"]
    assert logs(a) == logs(b)
    assert not b.with_name(b.name + ".state.pt").exists()


def kill_and_rerun(tmp: Path, schedule: str, after_epochs: int, fraction: float, *extra: object,
                   check_others_refused: bool = False) -> Path:
    """Kill a run ``fraction`` of an epoch after epoch ``after_epochs`` is logged, then run it again."""
    out = tmp / f"killed-{schedule}-{after_epochs}-{fraction:.2f}" / "t.pt"
    args = teacher_args(out, schedule, *extra)
    metrics = out.with_name(out.name + ".metrics.jsonl")
    kill_part_way(args, metrics, after_epochs, fraction, out, lambda: shutil.rmtree(out.parent))
    assert not out.exists()
    if check_others_refused:  # the state of this run is not continued by another one
        state = out.with_name(out.name + ".state.pt")
        before = state.read_bytes()
        assert_one_line_error(*run_cli(*args, "--label-smoothing", 0.1), "label_smoothing")
        assert state.read_bytes() == before
    code, text = run_cli(*args)
    assert code == 0, text
    return out


def test_train_teacher_killed_after_a_milestone_reruns_bitwise(tmp_path: Path) -> None:
    ref = reference(tmp_path, "multistep")
    # Killed once epoch 3 is logged: the state holds epoch 2 or 3, both past the first milestone.
    out = kill_and_rerun(tmp_path, "multistep", 3, 0.0, check_others_refused=True)
    assert [r["lr"] for r in logs(out)[0]] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert_same_teacher(ref, out)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["multistep", "cosine", "constant"])
def test_train_teacher_killed_at_random_points_reruns_bitwise(tmp_path: Path, schedule: str) -> None:
    ref = reference(tmp_path, schedule, "--regt", 0.01)
    rng = random.Random(schedule)
    for after in (1, 2, 3):
        out = kill_and_rerun(tmp_path, schedule, after, rng.uniform(0.0, 0.9), "--regt", 0.01)
        assert_same_teacher(ref, out)


def test_train_teacher_killed_part_way_with_a_cosine_schedule_reruns_bitwise(tmp_path: Path) -> None:
    """The default run's cosine-schedule kill (the slow test above kills every schedule)."""
    ref = reference(tmp_path, "cosine")
    out = kill_and_rerun(tmp_path, "cosine", 3, random.Random("cosine").uniform(0.0, 0.9))
    assert_same_teacher(ref, out)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished constant-schedule teacher (tests only read it)."""
    return reference(tmp_path_factory.mktemp("finished"), "constant")


def test_the_same_command_after_it_finished_changes_nothing(finished: Path) -> None:
    out = finished
    before = out.read_bytes()
    code, text = run_cli(*teacher_args(out, "constant", "--workers", 1))  # --workers may change
    assert code == 0 and "already holds" in text, text
    assert out.read_bytes() == before


def test_train_teacher_never_overwrites_another_commands_checkpoint(tmp_path: Path, finished: Path) -> None:
    out = finished
    before = out.read_bytes()
    # Another train-teacher's checkpoint: the difference is named.
    assert_one_line_error(*run_cli(*teacher_args(out, "cosine")), "optim.schedule")
    assert out.read_bytes() == before
    # A distill's final.pt (a bare state dict) and a file that is no checkpoint at all.
    final = tmp_path / "run" / "final.pt"
    final.parent.mkdir()
    torch.save(load_checkpoint(out)["state_dict"], final)
    assert_one_line_error(*run_cli(*teacher_args(final)), "no `kdcache train-teacher` run wrote")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert_one_line_error(*run_cli(*teacher_args(notes)), "not a checkpoint")
    assert notes.read_text() == "mine"


@pytest.mark.parametrize("option,value", [("--workers", -1), ("--batch-size", 0), ("--epochs", 0), ("--lr", 0),
                                          ("--label-smoothing", 1.0), ("--regt", -1), ("--momentum", -0.5)])
def test_bad_option_values_are_one_line_usage_errors(tmp_path: Path, option: str, value: object) -> None:
    args = teacher_args(tmp_path / "t.pt")
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    assert_one_line_error(*run_cli(*args), option, exit_code=2)
    assert not any(tmp_path.iterdir())


def test_the_default_recipe_follows_the_dataset_and_is_printed(tmp_path: Path) -> None:
    args = teacher_args(tmp_path / "t.pt")
    i = args.index("--recipe")
    del args[i:i + 2]
    args[args.index("--epochs") + 1] = 1
    code, text = run_cli(*args)
    assert code == 0, text
    assert "recipe: none" in text  # synthetic data declares the `none` recipe
    assert load_checkpoint(tmp_path / "t.pt")["card"]["trained"]["recipe"] == "none"

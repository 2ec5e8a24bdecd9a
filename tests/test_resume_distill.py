"""`kdcache distill --resume` after a SIGKILL at any point ends bitwise identical to an uninterrupted run.

No monkeypatching: a real subprocess is killed and the same command is run
with ``--resume``. Kills land after a learning-rate milestone (multistep:
epochs 2, 3, 4 of 4), where re-stepping the schedule on a restored
optimizer would decay the learning rate twice. SLKD's extra networks and
their optimizers go through the same checkpoint.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from tests.cli_helpers import assert_one_line_error, run_cli
from tests.stores import args_of  # the session `store` fixture (tests/conftest.py) is made of its DATA
from tests.resume_helpers import ROOT, assert_same_tensors, kill_part_way, read_jsonl, without_timings

TINY = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")




def assert_same_run(a: Path, b: Path) -> None:
    assert_same_tensors(torch.load(a / "final.pt", weights_only=True), torch.load(b / "final.pt", weights_only=True))
    assert without_timings(read_jsonl(a / "metrics.jsonl")) == without_timings(read_jsonl(b / "metrics.jsonl"))
    assert read_jsonl(a / "steps.jsonl") == read_jsonl(b / "steps.jsonl")
    sa, sb = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (a, b))
    for name in sa["modules"]:  # SLKD's extra networks too, not only the student
        assert_same_tensors(sa["modules"][name], sb["modules"][name])


def kill_and_resume(out: Path, args: list, after_epochs: int, fraction: float = 0.0) -> None:
    """Kill the run ``fraction`` of an epoch after epoch ``after_epochs`` is logged, then resume it."""
    kill_part_way(args, out / "metrics.jsonl", after_epochs, fraction, out / "final.pt", lambda: shutil.rmtree(out))
    assert not (out / "final.pt").exists()
    code, text = run_cli(*args, "--resume")
    assert code == 0, text


def test_distill_killed_after_a_milestone_resumes_bitwise(tmp_path: Path, store: Path) -> None:
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert run_cli(*args_of(ref, store, "slkd"))[0] == 0
    kill_and_resume(out, args_of(out, store, "slkd"), after_epochs=3)
    assert [r["lr"] for r in read_jsonl(out / "metrics.jsonl")] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert_same_run(ref, out)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["multistep", "cosine", "constant"])
@pytest.mark.parametrize("mode", ["cached", "online"])
def test_distill_killed_at_random_points_resumes_bitwise(tmp_path: Path, store: Path, schedule: str,
                                                         mode: str) -> None:
    source = store if mode == "cached" else None
    ref = tmp_path / "ref"
    assert run_cli(*args_of(ref, source, "dkd", schedule))[0] == 0
    rng = random.Random(f"{schedule}-{mode}")
    for after in (1, 2, 3):
        out = tmp_path / f"killed-{after}"
        kill_and_resume(out, args_of(out, source, "dkd", schedule), after, rng.uniform(0.0, 0.9))
        assert_same_run(ref, out)


def test_online_distill_killed_part_way_with_a_constant_schedule_resumes_bitwise(tmp_path: Path) -> None:
    """The default run's online-mode kill (the slow test above kills every mode and schedule)."""
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert run_cli(*args_of(ref, None, "kd", "constant"))[0] == 0
    kill_and_resume(out, args_of(out, None, "kd", "constant"), 2, random.Random("online").uniform(0.0, 0.9))
    assert_same_run(ref, out)


def test_a_resume_of_a_finished_run_changes_nothing(tmp_path: Path, store: Path) -> None:
    out = tmp_path / "run"
    args = args_of(out, store, "kd", "constant", "--epochs", 1)
    assert run_cli(*args)[0] == 0
    before = (out / "final.pt").read_bytes()
    code, text = run_cli(*args, "--resume", "--workers", 1)  # --workers may change on resume
    assert code == 0 and "already done" in text, text
    assert (out / "final.pt").read_bytes() == before


def test_resume_with_other_arguments_is_refused_naming_them(tmp_path: Path, store: Path) -> None:
    out = tmp_path / "run"
    assert run_cli(*args_of(out, store, "kd", "constant", "--epochs", 1))[0] == 0
    assert_one_line_error(*run_cli(*args_of(out, store, "kd", "cosine", "--epochs", 1, "--resume")),
                          "optim.schedule")
    assert_one_line_error(*run_cli(*args_of(out, store, "kd", "constant", "--epochs", 1,
                                            "--loss-opt", "temperature=2", "--resume")), "loss_opts.temperature")


def test_out_naming_a_file_is_one_line(tmp_path: Path, store: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert_one_line_error(*run_cli(*args_of(out, store)), "is a file")
    assert out.read_text() == "mine"

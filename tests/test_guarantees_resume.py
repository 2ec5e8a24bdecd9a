"""Documented resume guarantees, checked at their edge with a real SIGKILL after epoch 1's saved state.

* docs/distill.md, "Interrupting and resuming": a cached run's store may move (its content is compared,
  not its path); a store with other content (another --seed) is refused in one line with the differences.
* docs/scaling.md, "Precision": an fp16 run's gradient scaler is saved in the checkpoint, and a resume at
  the same precision stays bitwise on the same device.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.cli_helpers import assert_one_line_error, distill_args, run_cli
from tests.resume_helpers import ROOT, assert_same_tensors, read_jsonl, run_until_killed, without_timings

DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
DISTILL = {"data": DATA, "val_data": VAL, "loss": "kd", "epochs": 2, "batch_size": 16, "seed": 3, "lr": 0.1,
           "schedule": "constant"}


def make_store(out: Path, seed: int) -> Path:
    code, text = run_cli("precompute", "--data", DATA, "--teacher", TINY, "--views", "2", "--seed", seed,
                         "--recipe", RECIPE, "--out", out, "--chunk-rows", "64", "--encoding", "float32")
    assert code == 0, text
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guarantees-resume")
    return {"store": make_store(root / "store.zarr", 11), "other_seed": make_store(root / "seed12.zarr", 12)}


def kill_after_first_state(args: list[object], out: Path, tries: int = 5) -> None:
    """SIGKILL the run as soon as epoch 1's checkpoint exists (written atomically, after the logs), so the
    resume must continue from a saved state rather than start over; retried should the run end first."""
    state = out / "checkpoint.pt"
    for _ in range(tries):
        if run_until_killed(args, state.exists) and not (out / "final.pt").exists():
            saved = torch.load(state, weights_only=True)
            assert saved["epoch"] == 1
            return
        shutil.rmtree(out, ignore_errors=True)
    raise AssertionError(f"the run ended before it could be killed, {tries} times")


def assert_same_run(a: Path, b: Path) -> None:
    assert_same_tensors(torch.load(a / "final.pt", weights_only=True), torch.load(b / "final.pt", weights_only=True))
    assert without_timings(read_jsonl(a / "metrics.jsonl")) == without_timings(read_jsonl(b / "metrics.jsonl"))
    assert read_jsonl(a / "steps.jsonl") == read_jsonl(b / "steps.jsonl")


def test_cached_resume_reads_a_moved_copy_of_the_store_and_refuses_another_seeds_store(
        tmp_path: Path, stores: dict[str, Path]) -> None:
    """docs/distill.md: the store's path may change on --resume (compared by content); a store whose
    content differs (here: made with --seed 12 instead of 11) is refused with the differences."""
    ref, out = tmp_path / "ref", tmp_path / "killed"
    code, text = run_cli(*distill_args(ref, store=stores["store"], **DISTILL))
    assert code == 0, text
    kill_after_first_state(distill_args(out, store=stores["store"], **DISTILL), out)
    before = (out / "checkpoint.pt").read_bytes()

    # Another seed's store at the original's place in the arguments: other views, other logits.
    code, text = run_cli(*distill_args(out, store=stores["other_seed"], **DISTILL), "--resume")
    assert_one_line_error(code, text, "teacher data this run reads changed", "views.seed: 11 -> 12",
                          "chunk checksums")
    assert (out / "checkpoint.pt").read_bytes() == before and not (out / "final.pt").exists()

    # A byte copy of the store elsewhere (the original gone): the same teacher data.
    copy = tmp_path / "elsewhere" / "moved.zarr"
    shutil.copytree(stores["store"], copy)
    code, text = run_cli(*distill_args(out, store=copy, **DISTILL), "--resume")
    assert code == 0, text
    assert "resuming distill from epoch 2" in text, text
    assert_same_run(ref, out)


def test_fp16_run_killed_after_epoch_1_resumes_bitwise_with_its_gradient_scaler(
        tmp_path: Path, stores: dict[str, Path]) -> None:
    """docs/scaling.md: fp16 training's gradient scaler is saved in the checkpoint and restored, and
    the resumed run ends bitwise equal to the uninterrupted one, scaler state included."""
    ref, out = tmp_path / "ref", tmp_path / "killed"
    code, text = run_cli(*distill_args(ref, "--precision", "fp16", store=stores["store"], **DISTILL))
    assert code == 0, text
    kill_after_first_state(distill_args(out, "--precision", "fp16", store=stores["store"], **DISTILL), out)
    first = torch.load(out / "checkpoint.pt", weights_only=True)["scaler"]
    steps_per_epoch = len(read_jsonl(out / "steps.jsonl"))
    assert steps_per_epoch == 128 // 16

    code, text = run_cli(*distill_args(out, "--precision", "fp16", store=stores["store"], **DISTILL), "--resume")
    assert code == 0, text
    assert "resuming distill from epoch 2" in text, text
    assert_same_run(ref, out)

    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(out / "checkpoint.pt", weights_only=True)
    assert_same_tensors(a["modules"]["student"], b["modules"]["student"])
    sa, sb = a["scaler"], b["scaler"]
    assert sa.keys() == sb.keys() and "_growth_tracker" in sa and "scale" in sa, sa
    assert {k: float(v) for k, v in sa.items()} == {k: float(v) for k, v in sb.items()}
    # The tracker counts every step since the last scale change: a scaler restarted at epoch 2 would
    # hold fewer steps (or another scale) than the uninterrupted run's.
    assert sa["_growth_tracker"] == first["_growth_tracker"] + steps_per_epoch or sa["scale"] != first["scale"]

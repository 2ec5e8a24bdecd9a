"""`--precision fp32|bf16|fp16`: what autocast a teacher or a student ran under is recorded and kept.

A bf16 store records its precision in the teacher card, replays bitwise under the same precision
(`verify --replay`), and refuses to be resumed at another one (its bits would differ); distill and
train-teacher record theirs in the run record, and a resume at another precision is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zarr

from tests.cli_helpers import assert_one_line_error, precompute_args, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=5,size=12,channels=1,seed=3"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
PRECOMPUTE = {"data": DATA, "views": 1, "encoding": "float32"}


@pytest.fixture(scope="module")
def bf16_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bf16") / "s.zarr"
    code, text = run_cli(*precompute_args(out, "--precision", "bf16", **PRECOMPUTE))
    assert code == 0, text
    return out


def test_bf16_store_records_its_precision_and_replays_bitwise(bf16_store: Path, tmp_path: Path) -> None:
    card = zarr.open_group(bf16_store, mode="r").attrs["kdcache"]["teachers"]["tiny"]
    assert card["precision"] == "bf16"
    fp32 = tmp_path / "fp32.zarr"
    assert run_cli(*precompute_args(fp32, **PRECOMPUTE))[0] == 0
    a = zarr.open_group(bf16_store, mode="r")["teachers/tiny/logits"][:]
    b = zarr.open_group(fp32, mode="r")["teachers/tiny/logits"][:]
    assert (a != b).any()  # autocast changed the numerics: the card must say so
    code, text = run_cli("verify", bf16_store, "--replay", "4")
    assert code == 0 and "max |logit difference| 0" in text, text  # the card's autocast, replayed


def test_another_precision_cannot_add_to_a_store_teacher(bf16_store: Path) -> None:
    code, text = run_cli(*precompute_args(bf16_store, "--precision", "fp32", **PRECOMPUTE))
    assert_one_line_error(code, text, "precision")


def test_distill_records_precision_and_refuses_another_on_resume(bf16_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["distill", bf16_store, "--data", DATA, "--val-data", DATA, "--student", "kdcache:tiny_cnn",
            "--epochs", "1", "--batch-size", "64", "--out", out]
    code, text = run_cli(*args, "--precision", "bf16")
    assert code == 0, text
    record = json.loads((out / "run.json").read_text())
    assert record["distributed"]["precision"] == "bf16" and record["identity"]["precision"] == "bf16"
    code, text = run_cli(*args, "--precision", "fp32", "--resume")
    assert_one_line_error(code, text, "precision")

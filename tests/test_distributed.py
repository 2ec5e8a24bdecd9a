"""`torchrun ... kdcache precompute`: 2 CPU ranks on gloo write the store a single process writes, bit for bit.

Each job is a real ``torchrun --nproc-per-node 2 --no-python kdcache ...`` (subprocesses); the reference
runs in this process through the CLI. The data is small and the teacher tiny: what is tested is the
split, the barriers, the lock and the bits, not speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.cli_helpers import precompute_args, run_cli
from tests.dist_helpers import assert_same_store, torchrun, torchrun_until_killed

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=1200,classes=5,size=12,channels=1,seed=3"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
PRECOMPUTE = {"data": DATA, "recipe": RECIPE, "encoding": "float32"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store one process writes (in this process, through the CLI)."""
    out = tmp_path_factory.mktemp("ref") / "one.zarr"
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert code == 0, text
    return out


def records_written(store: Path, teacher: str = "tiny") -> int:
    """Chunks whose checksum record exists (what a resume will skip)."""
    d = store / "teachers" / teacher / "checksums" / "c"
    return sum(1 for f in d.rglob("*") if f.is_file()) if d.exists() else 0


def test_two_ranks_write_the_single_process_store_bitwise(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "two.zarr"
    # A --batch-size that cuts chunks differently than the reference's default: the bits must not care.
    code, text = torchrun(2, *precompute_args(out, "--batch-size", "128", **PRECOMPUTE))
    assert code == 0, text
    assert text.count("store: ") == 1, text  # one summary for the job (rank 0)
    assert "Traceback" not in text
    manifest = zarr.open_group(out, mode="r").attrs["kdcache"]
    assert manifest["status"] == "complete" and manifest["teachers"]["tiny"]["status"] == "complete"
    assert manifest["teachers"]["tiny"]["precision"] == "fp32"
    assert_same_store(reference, out)
    # The same command again (1 process) finds nothing left to do: the 2-rank job recorded every chunk.
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert code == 0 and "0 views scored" in text and "already stored" in text, text


def test_killed_two_rank_job_resumes_with_one_process(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "killed.zarr"
    total = 2 * -(-1200 // 64)
    for _ in range(3):  # a fast machine may finish before the kill lands: try again from scratch
        killed = torchrun_until_killed(2, precompute_args(out, **PRECOMPUTE), lambda: records_written(out) >= 4)
        if killed and records_written(out) < total:
            break
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    else:
        pytest.fail("the 2-rank job finished before it could be killed, 3 times")
    partial = records_written(out)
    assert 0 < partial < total
    assert zarr.open_group(out, mode="r").attrs["kdcache"]["status"] == "writing"
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))  # the same command, one process
    assert code == 0, text
    assert "resuming 'tiny'" in text
    assert_same_store(reference, out)


def test_failure_on_one_rank_is_its_one_line(tmp_path: Path, reference: Path) -> None:
    """A teacher that gives NaN on rank 1 only: that rank's line, once, and every rank stops."""
    import shutil

    out = tmp_path / "corrupt.zarr"
    shutil.copytree(reference, out)
    # A second teacher on the recorded views; the strided split gives rank 1 pending chunks of its own.
    args = [a if a != "import:tests.helpers:tiny" else "import:tests.helpers:nan_on_rank_1"
            for a in precompute_args(out, "--teacher-name", "second", **PRECOMPUTE)]
    code, text = torchrun(2, *args)
    assert code != 0, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert errors[0].startswith("error: rank 1: ") and "NaN" in errors[0], text
    # No rank prints a traceback (torchrun's own end-of-job report follows, naming rank 1's line as the cause).
    assert "[rank0]: Traceback" not in text and "[rank1]: Traceback" not in text, text
    assert "root cause" in text.lower() and "rank 1: " in text.lower().split("root cause")[1], text
    # The first teacher's bits are untouched; the second is left 'writing', to be resumed.
    manifest = zarr.open_group(out, mode="r").attrs["kdcache"]
    assert manifest["teachers"]["second"]["status"] == "writing"
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["teachers/tiny/logits"][:],
                                  zarr.open_group(reference, mode="r")["teachers/tiny/logits"][:])


@pytest.mark.slow  # one more torchrun job for an option check
def test_option_error_is_printed_once(tmp_path: Path) -> None:
    code, text = torchrun(2, *precompute_args(tmp_path / "x.zarr", "--precision", "fp8", **PRECOMPUTE))
    assert code != 0
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--precision" in errors[0], text

"""torchrun precompute into ``s3://``: two ranks write disjoint chunks under rank 0's lease, and the store is
bitwise the one a single process writes there (slow: two torchrun workers and a single run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kdcache.store import Store
from tests.s3_server import S3Server, s3_env

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["precompute", "--data", "synthetic:samples=512,classes=5,size=12,channels=1,seed=3", "--teacher",
          "import:tests.helpers:tiny", "--views", "2", "--seed", "7", "--recipe",
          str(ROOT / "tests" / "data" / "recipe-small.json"), "--chunk-rows", "64", "--encoding", "float32"]


@pytest.fixture(scope="module")
def server(s3: S3Server) -> S3Server:
    """The session's S3 server (tests/conftest.py) with this module's bucket."""
    s3.make_bucket("kdcache-ddp")
    return s3


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_two_rank_precompute_on_s3_equals_one_process(server: S3Server) -> None:
    env = {**s3_env(server), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    two = subprocess.run(["torchrun", "--nproc-per-node", "2", "--no-python", "kdcache", *COMMON, "--out",
                          "s3://kdcache-ddp/two.zarr"], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run(["kdcache", *COMMON, "--out", "s3://kdcache-ddp/one.zarr"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = Store.open("s3://kdcache-ddp/two.zarr"), Store.open("s3://kdcache-ddp/one.zarr")
    assert a.status == b.status == "complete"
    assert np.array_equal(a.logits("tiny")[:], b.logits("tiny")[:])
    assert np.array_equal(a.params()[:], b.params()[:])
    assert np.array_equal(a.logit_checksums("tiny")[:], b.logit_checksums("tiny")[:])

"""A precompute into ``s3://`` SIGKILLed part-way (a real subprocess, killed by its progress) resumes to the bits
of an uninterrupted local run; until the killed writer's lease expires, the resume is refused naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import obstore
import pytest

from kdcache.store import Store, locate
from kdcache.store.layout import LEASE_NAME, logit_checksums
from tests.cli_helpers import assert_one_line_error, precompute_args, run_cli
from tests.s3_server import S3Server, s3_env

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=512,classes=5,size=12,channels=1,seed=3"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
PRECOMPUTE = {"data": DATA, "recipe": RECIPE, "encoding": "float32", "batch_size": 64}
LEASE_SECONDS = 5


@pytest.fixture(scope="module")
def server(s3: S3Server) -> S3Server:
    """The session's S3 server (tests/conftest.py) with this module's bucket."""
    s3.make_bucket("kdcache-resume")
    return s3


def _records(url: str) -> int:
    """Checksum records written so far (objects under the checksum array's chunk prefix)."""
    prefix = logit_checksums("slow") + "/c/"
    return sum(len(batch) for batch in obstore.list(locate(url).objects(), prefix))


def test_sigkill_on_s3_then_resume_is_identical(server: S3Server, tmp_path: Path) -> None:
    ref = tmp_path / "ref.zarr"
    assert run_cli(*precompute_args(str(ref), teacher="import:tests.helpers:tiny", **PRECOMPUTE))[0] == 0
    url = "s3://kdcache-resume/killed.zarr"
    args = precompute_args(url, "--storage-option", f"lease_seconds={LEASE_SECONDS}",
                           teacher="import:tests.helpers:slow",
                           **PRECOMPUTE)
    env = {**s3_env(server), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kdcache_cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill -9 once a few chunks are recorded
        if _records(url) >= 4:
            break
        time.sleep(0.05)
    finished = proc.poll()
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert finished is None, f"the run ended before it was killed: {err.decode()[-1000:]}"

    store = Store.open(url)
    written = int((np.asarray(store.logit_checksums("slow")[:]) > 0).sum())
    assert store.status == "writing" and 0 < written < 16
    code, text = run_cli("verify", url)
    assert code == 1 and "never written" in text, text

    # The killed writer's lease is still live: a resume now is refused, naming it (its pid).
    lease = json.loads(locate(url).read(LEASE_NAME)[0])  # type: ignore[index]
    assert lease["pid"] == proc.pid and not lease["released"]
    if time.time() < lease["expires"] - 1.5:  # (a loaded machine may get here later)
        assert_one_line_error(*run_cli(*args), f"pid {proc.pid}", "expires")
    time.sleep(max(0.0, lease["expires"] - time.time() + 0.2))

    code, text = run_cli(*args)  # expired: taken over, and the run resumes from the recorded chunks
    assert code == 0, text
    assert "already stored" in text
    a, b = Store.open(ref), Store.open(url)
    assert np.array_equal(a.logits("tiny")[:], b.logits("slow")[:])
    assert np.array_equal(a.params()[:], b.params()[:])
    assert np.array_equal(a.logit_checksums("tiny")[:], b.logit_checksums("slow")[:])
    assert run_cli("verify", url)[0] == 0
    assert os.environ["AWS_ENDPOINT_URL"] == server.endpoint

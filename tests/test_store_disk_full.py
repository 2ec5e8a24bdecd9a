"""Precompute into a disk that fills up: one line naming the full path, nothing written lost, and after
space is freed the same command completes a store identical to an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kdcache.store import Store
from tests.cli_helpers import assert_one_line_error, precompute_args, run_cli

# The data of tests/test_precompute.py.
PRECOMPUTE = {"data": "synthetic:samples=300,classes=5,size=12,channels=1,seed=3"}

DATA = "synthetic:samples=1024,classes=5,size=12,channels=1,seed=3"


@pytest.fixture(params=["48k", "256k"])  # full while writing the manifest / while writing chunks
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A small tmpfs (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (CI runs the tests as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_then_freed_completes_identical_store(tmp_path: Path, small_disk: Path) -> None:
    ref = tmp_path / "ref.zarr"
    assert run_cli(*precompute_args(ref, "--encoding", "float32", **{**PRECOMPUTE, "data": DATA}))[0] == 0
    out = small_disk / "s.zarr"
    args = precompute_args(out, "--encoding", "float32", **{**PRECOMPUTE, "data": DATA})
    code, text = run_cli(*args)
    assert_one_line_error(code, text, "no space left", str(small_disk))
    store = Store.open(out)  # the manifest survived: the store opens, and says it is unfinished
    assert store.status == "writing"
    written = int((np.asarray(store.logit_checksums("tiny")[:]) > 0).sum()) if store.teacher_names() else 0
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    code, text = run_cli(*args)
    assert code == 0, text
    if written:
        assert "already stored" in text  # what was written before the disk filled was kept
    a, b = Store.open(ref), Store.open(out)
    assert np.array_equal(a.logits("tiny")[:], b.logits("tiny")[:])
    assert np.array_equal(a.params()[:], b.params()[:])
    assert np.array_equal(a.logit_checksums("tiny")[:], b.logit_checksums("tiny")[:])
    assert run_cli("verify", out)[0] == 0
    assert not list(out.rglob("*.partial"))  # no temporary file left behind

"""Durable writes (kdcache.durable): a failed write or fsync (EIO, ENOSPC) is raised naming the file the
user asked for, leaves the previous file intact and no temporary behind; through the CLI it is one line,
and the run continues from what was kept."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from kdcache.durable import fsync_path, write_text_atomic
from kdcache.models import atomic_torch_save
from tests.cli_helpers import assert_one_line_error, run_cli

DATA = "synthetic:samples=96,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
RECIPE = str(Path(__file__).resolve().parent / "data" / "recipe-small.json")


def failing_fsync(monkeypatch: pytest.MonkeyPatch, matches: Callable[[str], bool], err: int = errno.EIO) -> list[str]:
    """Make ``os.fsync`` fail with ``err`` on descriptors whose file name ``matches``; returns the names hit."""
    real = os.fsync
    hits: list[str] = []

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if matches(name):
            hits.append(name)
            raise OSError(err, os.strerror(err))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return hits


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_a_failed_fsync_keeps_the_old_text_and_names_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                err: int) -> None:
    target = tmp_path / "run.json"
    write_text_atomic(target, "old\n")
    hits = failing_fsync(monkeypatch, lambda name: name.endswith(".tmp"), err)
    with pytest.raises(OSError) as info:
        write_text_atomic(target, "new\n")
    assert hits, "the temporary file was never fsynced"
    assert info.value.errno == err and info.value.filename == str(target)
    assert target.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_a_failed_torch_save_fsync_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "final.pt"
    atomic_torch_save(target, {"w": torch.zeros(3)})
    failing_fsync(monkeypatch, lambda name: name.endswith(".tmp"))
    with pytest.raises(OSError) as info:
        atomic_torch_save(target, {"w": torch.ones(3)})
    assert info.value.errno == errno.EIO and info.value.filename == str(target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.zeros(3))
    assert leftovers(tmp_path) == []


def test_a_failed_directory_fsync_is_raised_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hits = failing_fsync(monkeypatch, lambda name: name == str(tmp_path))
    with pytest.raises(OSError) as info:
        fsync_path(tmp_path)
    assert hits == [str(tmp_path)] and info.value.errno == errno.EIO
    # the rename into the directory happened; only its durability is in doubt, and the caller is told
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "summary.json", "{}\n")


def test_eio_writing_final_weights_is_one_line_and_resume_finishes_the_same_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store.zarr"
    code, text = run_cli("precompute", "--data", DATA, "--teacher", TINY, "--views", "2", "--seed", "3",
                         "--recipe", RECIPE, "--chunk-rows", "64", "--out", store)
    assert code == 0, text

    def distill(out: Path, *extra: object) -> tuple[int, str]:
        return run_cli("distill", store, "--data", DATA, "--val-data", VAL, "--student", TINY, "--epochs", "2",
                       "--batch-size", "32", "--out", out, *extra)

    reference = tmp_path / "reference"
    code, text = distill(reference)
    assert code == 0, text

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        failing_fsync(m, lambda name: Path(name).name.startswith(".final.pt."))
        code, text = distill(out)
    assert_one_line_error(code, text, "input/output error", str(out / "final.pt"), "run the same command again")
    assert not (out / "final.pt").exists() and leftovers(out) == []
    # every epoch was trained and its state kept: the resumed run only writes the final records
    assert len([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]) == 2

    code, text = distill(out, "--resume")
    assert code == 0, text
    got = torch.load(out / "final.pt", weights_only=True)
    want = torch.load(reference / "final.pt", weights_only=True)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

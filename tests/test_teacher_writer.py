"""A teacher entry's life (kdcache.store.teacher_writer) and what a refused or failed write leaves behind.

* ``--random-init`` applies per teacher, as ``--weights`` does: to the teachers given without weights;
  with a teacher's weights it is refused in one line (exit 2) before anything is written;
* a usage error is found before the writer lock, and a run that fails where no store was begun leaves
  neither a lock file, a lease, nor the directories made for it;
* every message of an entry's life comes from one module; ``precompute`` and ``convert`` print nothing
  themselves (the CLI renders their log records and warnings);
* convert's summary says "larger" for an entry that grew, and ``convert --help`` shows ``NAME_<encoding>``.
"""

from __future__ import annotations

import ast
import errno
import fcntl
import importlib.util
from pathlib import Path

import pytest
import torch

from kdcache.precompute.convert import ConvertResult, format_convert
from kdcache.errors import StoreBusyError, UsageError
from kdcache.models import build_model
from kdcache.precompute.run import TeacherRequest, precompute
from kdcache.store import LOCK_NAME, Store, WriterLock, locate
from kdcache.store.writing import creating_writer_lock
from tests.cli_helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
ZOO = "kdcache:tiny_cnn"


def _precompute(out: Path, *teacher_args: object) -> list[object]:
    return ["precompute", "--data", DATA, "--views", "1", "--seed", "0", "--recipe", RECIPE, "--out", out,
            *teacher_args]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model, _ = build_model(ZOO, 4, 1, random_init=True)
    torch.save(model.state_dict(), path)
    return path


# ---------------------------------------------------------------- --random-init, per teacher

def test_weights_with_random_init_is_refused_in_one_line_and_writes_nothing(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "new" / "s.zarr"
    code, text = run_cli(*_precompute(out, "--teacher", ZOO, "--weights", weights, "--random-init"))
    assert_one_line_error(code, text, "--weights and --random-init contradict", exit_code=2)
    assert not (tmp_path / "new").exists()


def test_random_init_applies_to_the_teachers_given_without_weights(tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "s.zarr"
    code, text = run_cli(*_precompute(out, "--teacher", ZOO, "--weights", weights, "--teacher-name", "trained",
                                      "--teacher", ZOO, "--teacher-name", "untrained", "--random-init"))
    assert code == 0, text
    store = Store.open(out)
    trained, untrained = store.card("trained"), store.card("untrained")
    assert trained.random_init is False and trained.weights_sha256 is not None and trained.init_seed is None
    assert untrained.random_init is True and untrained.weights_sha256 is None


def test_the_library_refuses_weights_and_random_init_for_one_teacher(tmp_path: Path, weights: Path) -> None:
    with pytest.raises(UsageError, match="contradict"):
        precompute(data=DATA, teachers=[TeacherRequest(ZOO, str(weights), random_init=True)], views=1, seed=0,
                   out=tmp_path / "s.zarr", recipe=RECIPE, progress=False)
    assert not (tmp_path / "s.zarr").exists()


# ---------------------------------------------------------------- nothing left behind

def test_a_chunk_rows_usage_error_is_found_before_the_lock_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "s.zarr"
    code, text = run_cli(*_precompute(out, "--teacher", "import:tests.helpers:tiny", "--chunk-rows", "100"))
    assert_one_line_error(code, text, "--chunk-rows 100", "micro-batch", exit_code=2)
    assert not (tmp_path / "runs").exists()  # neither the store's directory nor its lock file
    code, text = run_cli("info", out)
    assert_one_line_error(code, text, "no store at")


def test_a_failure_after_the_lock_where_no_store_was_begun_leaves_nothing(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> Store:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "runs" / "s.zarr"))

    monkeypatch.setattr(Store, "create", full)
    out = tmp_path / "runs" / "s.zarr"
    code, text = run_cli(*_precompute(out, "--teacher", "import:tests.helpers:tiny", "--chunk-rows", "64"))
    assert_one_line_error(code, text, "no space left")
    assert not (tmp_path / "runs").exists()


def test_a_failure_in_an_existing_store_keeps_it_usable(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    args = _precompute(out, "--teacher", "import:tests.helpers:tiny", "--chunk-rows", "64")
    assert run_cli(*args)[0] == 0
    # Refused while another writer holds the lock: found before the lock, so not "being written".
    with WriterLock(out):
        code, text = run_cli(*_precompute(out, "--teacher", "import:tests.helpers:tiny", "--chunk-rows", "128"))
        assert_one_line_error(code, text, "chunk rows: store has 64, this run asks 128")
        code, text = run_cli(*args, "--codec", "zstd")  # the teacher the store holds, made differently
        assert_one_line_error(code, text, "already has a teacher 'tiny' made differently", "codec")
    code, text = run_cli("info", out)
    assert code == 0 and "tiny" in text, text


def test_the_lock_of_a_location_where_nothing_was_begun_is_removed_on_failure(tmp_path: Path) -> None:
    for target in (tmp_path / "a" / "b", "memory://kdcache-writer-test/fresh"):
        with pytest.raises(KeyboardInterrupt), creating_writer_lock(target):
            raise KeyboardInterrupt
        if isinstance(target, Path):
            assert not (tmp_path / "a").exists()
        else:
            assert not locate(target).names()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(RuntimeError), creating_writer_lock(kept):
        raise RuntimeError("refused")
    assert kept.is_dir() and not any(kept.iterdir())  # the user's own empty directory stays, without a lock


def test_a_lock_file_removed_while_waiting_is_not_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that opened the lock file just before the holder discarded it locks the file now at the
    path, not the unlinked one (which a third writer could not see)."""
    first, second = WriterLock(tmp_path), WriterLock(tmp_path)
    first.acquire()
    real_flock = fcntl.flock
    pending = [True]

    def flock(fd: int, operation: int) -> None:
        if pending and fd != first._fd:  # the second writer, between its open and its flock
            pending.clear()
            first.discard()
            first.release()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    second.acquire()
    try:
        assert not pending and (tmp_path / LOCK_NAME).exists()
        with pytest.raises(StoreBusyError):
            WriterLock(tmp_path).acquire()
    finally:
        second.release()


# ---------------------------------------------------------------- one module, no printing

def test_the_teacher_entry_messages_live_in_the_teacher_writer() -> None:
    lifecycle = ("already has a teacher", "rows already stored", "chunk(s) of teacher", "another platform",
                 "must use letters", "status=\"complete\"")
    # Every producer of a teacher entry, found by import (a moved module cannot be skipped silently).
    for module in ("kdcache.precompute.run", "kdcache.precompute.convert", "kdcache.precompute.ensemble"):
        source = Path(importlib.util.find_spec(module).origin).read_text()
        assert not any(needle in source for needle in lifecycle), module
        calls = {node.func.attr for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
        assert "print" not in calls and "teacher_accuracy" not in source, module
    writer = (ROOT / "kdcache" / "store" / "teacher_writer.py").read_text()
    assert all(needle in writer for needle in lifecycle)


# ---------------------------------------------------------------- convert's words

def _result(bytes_per_view: float, source_bytes_per_view: float) -> ConvertResult:
    return ConvertResult(store="s.zarr", source="f16", name="f32", encoding="float32", rows_written=64,
                         rows_skipped=0, seconds=0.1, bytes_per_view=bytes_per_view,
                         source_bytes_per_view=source_bytes_per_view)


def test_convert_says_larger_for_an_entry_that_grew() -> None:
    assert "(2.0x larger than f16)" in format_convert(_result(2e6, 1e6))
    assert "(4.0x smaller than f16)" in format_convert(_result(1e6, 4e6))
    assert "(about the same size as f16)" in format_convert(_result(1e6, 1.01e6))


def test_convert_help_shows_the_default_name() -> None:
    code, text = run_cli("convert", "--help")
    assert code == 0 and "NAME_<encoding>" in text, text

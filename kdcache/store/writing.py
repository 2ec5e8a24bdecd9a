"""Writing a store safely: the writer lock, durable JSON, and the background chunk writer.

zarr itself does not protect against what is handled here: two writers
losing each other's chunks (one writer at a time, by ``flock``), metadata
that is renamed into place but not yet on disk (fsync of the file and its
directory), and an OSError that names a temporary file instead of the node
being written (re-raised naming the chunk's path).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import queue
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdcache.durable import fsync_path
from kdcache.errors import StoreBusyError
from kdcache.store.layout import LOCK_NAME
from kdcache.store.location import Location, locate, probe_location

if TYPE_CHECKING:
    from kdcache.store.lease import Lease


class WriterLock:
    """An exclusive, non-blocking writer lock on a store (``flock``).

    The kernel drops it when the process dies, so a SIGKILLed precompute never
    leaves a stale lock behind; a live second writer is refused at once.
    """

    def __init__(self, store_path: Path, name: str = LOCK_NAME) -> None:
        self.path = Path(store_path) / name
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self.busy(self._holder()) from None
        if not _same_file(fd, self.path):
            # A writer that found nothing to protect removed the file while we waited to lock it
            # (discard): the lock is the file now at the path, not the one we opened.
            os.close(fd)
            return self.acquire()
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} on {socket.gethostname()}".encode())  # read back by the refused writer
        self._fd = fd
        self.acquired()

    def busy(self, holder: str) -> Exception:
        """The error for a lock that a live process holds (``holder``: its pid and host)."""
        return StoreBusyError(f"{self.path.parent} is being written by another process "
                              f"(pid {holder}); wait for it to finish or stop it, then run again")

    def acquired(self) -> None:
        """Called once the lock is held: what a killed store writer left half-written is removed."""
        remove_stale_partials(self.path.parent)

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def discard(self) -> None:
        """Remove the lock file while still holding it, where it protects nothing (no store was begun)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass  # already gone: nothing to remove

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# zarr's local store writes each object to ``<name>.<uuid4 hex>.partial`` and renames it into
# place; a writer killed between the two leaves that file behind. It is never read (zarr does
# not list it as a chunk) but it is litter that makes a resumed store differ from an
# uninterrupted one file by file, so the next writer, once it holds the lock, removes it.
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


def remove_stale_partials(root: Path) -> int:
    """Delete the temporary files a killed zarr write left under ``root``; returns how many.

    Only call this while holding the writer lock: a live writer's temporary files are not stale.
    """
    removed = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if _PARTIAL.search(name):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except FileNotFoundError:
                    pass  # already gone: nothing to clean
    return removed


def writer_lock(target: str | os.PathLike[str] | Location) -> AbstractContextManager[object]:
    """The exclusive writer lock of a store: ``flock`` on a local directory, a lease on an object store
    (:meth:`kdcache.store.backend.Backend.writer_lock`).

    Both refuse a live second writer at once with one line naming the holder,
    and both outlive nothing: the kernel drops a dead process's ``flock``, and
    a dead writer's lease expires (``kdcache.store.lease``).
    """
    return locate(target).backend.writer_lock()


@contextlib.contextmanager
def creating_writer_lock(target: str | os.PathLike[str] | Location) -> Iterator[WriterLock | Lease]:
    """:func:`writer_lock` on a store that may not exist yet (precompute's ``--out``).

    A local directory and its missing parents are made first
    (:meth:`~kdcache.store.backend.Backend.prepare`). If the block fails while
    the location holds nothing but the lock (no store was begun there: a
    refusal, Ctrl-C), the lock file or lease is removed while still held, and
    so is every directory made here: a first run that fails leaves nothing
    behind. A store begun there is kept, to be resumed.
    """
    location = locate(target)
    undo = location.backend.prepare()
    kept = False
    try:
        with writer_lock(location) as lock:
            try:
                yield lock
            except BaseException:
                try:
                    empty = probe_location(location) == "empty"
                except Exception:  # noqa: BLE001 - unreachable now: keep the lock, report the first error
                    empty = False
                if empty:
                    lock.discard()
                raise
        kept = True
    finally:
        if not kept:
            undo()


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def sync_tree(path: Path) -> None:
    """Flush every file and directory under ``path`` to stable storage."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fsync_path(Path(root, name))
        fsync_path(Path(root))


def naming(path: Path, exc: OSError) -> OSError:
    """``exc`` re-raised with ``path`` as its file name when the OS named none (or a temp file)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or exc.filename is None:
        return OSError(exc.errno, exc.strerror or str(exc), str(path))
    return exc


class ChunkWriter:
    """A background thread that writes finished chunks while the teacher scores the next.

    ``write(view, chunk, logits, params)`` is the store's chunk write. The
    queue is bounded (two chunks), so memory stays bounded whatever the store
    size. An error in the thread stops writing and is re-raised in the caller;
    a chunk whose record was not written is redone by the next run.
    """

    def __init__(self, write: Callable[[int, int, np.ndarray, np.ndarray | None], None]) -> None:
        self._write = write
        self.queue: queue.Queue[tuple[int, int, np.ndarray, np.ndarray | None] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.written = 0
        self.thread = threading.Thread(target=self._run, name="kdcache-writer", daemon=True)
        self.thread.start()

    def put(self, view: int, chunk: int, logits: np.ndarray, params: np.ndarray | None) -> None:
        self.raise_if_failed()
        self.queue.put((view, chunk, logits, params))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain without writing after a failure
            try:
                self._write(*item)
                self.written += 1
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.error = exc

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Write everything queued, stop the thread, re-raise a writer error."""
        self.queue.put(None)
        self.thread.join()
        self.raise_if_failed()

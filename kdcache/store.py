"""The logit store: a zarr v3 group holding raw teacher logits on replayable views.

The layout is a contract with other teams (``docs/store-format.md``); this
module is the only code that reads or writes it. What zarr does not protect
against (see ZARR-NOTES.md) is handled here:

* concurrent writers: one writer at a time, enforced by an ``flock`` on a lock
  file inside the store (released by the kernel even on SIGKILL);
* unwritten chunks reading back as the fill value: logits are filled with NaN
  and progress is never inferred from zarr; each chunk has a completion record
  holding its checksum, written only after the chunk itself;
* no fsync: a chunk is trusted on resume only if its bytes still hash to its
  record, and the store is synced to disk before it is marked ``complete``.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from kdcache import __version__
from kdcache.errors import (
    StoreBusyError,
    StoreError,
    StoreIncompleteError,
    StoreNotFoundError,
)

FORMAT_NAME = "kdcache-store"
FORMAT_VERSION = 1
MANIFEST_KEY = "kdcache"
LOCK_NAME = ".kdcache-writer.lock"
ENCODINGS = ("float16", "float32")
CODECS = ("none", "zstd", "blosc-zstd")
# Chunks of about this many bytes: big enough that a zarr call (~1 ms) is
# amortised over thousands of rows, small enough to buffer a few in RAM.
TARGET_CHUNK_BYTES = 4 << 20


def utc_now() -> str:
    """The current time as an ISO-8601 string (UTC), for manifests."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def library_versions() -> dict[str, str]:
    """Versions of everything that can change a stored bit, for the manifest."""
    import numcodecs
    import torch
    import torchvision

    return {
        "kdcache": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        # Kernels differ by instruction set (AVX2 vs AVX-512 give other bits),
        # so a bitwise replay audit is meaningful only where these match.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }


def default_chunk_rows(num_classes: int, num_samples: int, itemsize: int, multiple: int) -> int:
    """Rows per chunk: about TARGET_CHUNK_BYTES, a multiple of the teacher micro-batch.

    Chunks are aligned to the micro-batch so that a row's position inside the
    teacher's micro-batch never depends on the user's batch size. The rows are
    balanced over the chunks a view needs, because zarr stores an uncompressed
    edge chunk padded to full size (a 3-chunk view of 50,000 rows would
    otherwise waste a quarter of its bytes).
    """
    target = max(multiple, TARGET_CHUNK_BYTES // max(1, num_classes * itemsize))
    chunks = max(1, math.ceil(num_samples / target))
    rows = math.ceil(max(num_samples, 1) / chunks)
    return int(math.ceil(rows / multiple) * multiple)


def checksum(array: np.ndarray) -> int:
    """A 64-bit BLAKE2b digest of an array's bytes, never 0 (0 means 'not written')."""
    digest = hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value or 1


def _compressors(codec: str) -> Any:
    if codec == "none":
        return None
    if codec == "zstd":
        return zarr.codecs.ZstdCodec(level=1)
    if codec == "blosc-zstd":
        return zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
    raise StoreError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")


def dir_size(path: Path) -> int:
    """Bytes on disk under ``path`` (file sizes, as a user's ``du --apparent`` shows)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass  # a temp file renamed away while we walked
    return total


@dataclass(frozen=True)
class ChunkGrid:
    """How the N samples of a view are cut into chunks."""

    num_samples: int
    chunk_rows: int

    @property
    def num_chunks(self) -> int:
        return max(1, math.ceil(self.num_samples / self.chunk_rows))

    def bounds(self, chunk: int) -> tuple[int, int]:
        """[start, stop) sample range of chunk ``chunk``."""
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.num_samples)


class WriterLock:
    """An exclusive, non-blocking writer lock on a store (``flock``).

    The kernel drops it when the process dies, so a SIGKILLed precompute never
    leaves a stale lock behind; a live second writer is refused at once.
    """

    def __init__(self, store_path: Path) -> None:
        self.path = store_path / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusyError(
                f"{self.path.parent} is being written by another process "
                f"(pid {self._holder()}); wait for it to finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

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


def _is_zarr_group(path: Path) -> bool:
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("node_type") == "group"
    except (OSError, ValueError):
        return False


class Store:
    """A kdcache store on local disk: manifest, labels, view parameters, teachers.

    Open one with :meth:`open` (read-only unless ``mode="r+"``) or make one
    with :meth:`create`. Read-only stores refuse every write, so a store opened
    for distillation cannot be changed by mistake.
    """

    def __init__(self, path: Path, group: zarr.Group, writable: bool) -> None:
        self.path = path
        self.group = group
        self.writable = writable
        self.manifest: dict[str, Any] = dict(group.attrs[MANIFEST_KEY])

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r") -> Store:
        """Open an existing store, checking that it is a kdcache store we can read."""
        p = Path(path)
        if not p.exists():
            raise StoreNotFoundError(f"no store at {p}; make one with `kdcache precompute --out {p}`")
        if not p.is_dir() or not _is_zarr_group(p):
            raise StoreError(f"{p} is not a kdcache store (no zarr group there)")
        group = zarr.open_group(p, mode="r+" if mode == "r+" else "r")
        if MANIFEST_KEY not in group.attrs:
            raise StoreError(f"{p} is a zarr group but not a kdcache store (no '{MANIFEST_KEY}' manifest)")
        manifest = group.attrs[MANIFEST_KEY]
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise StoreError(f"{p} has a '{MANIFEST_KEY}' attribute that is not a kdcache manifest")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{p} was written in store format version {version}; this kdcache "
                f"({__version__}) reads version {FORMAT_VERSION} only: use the kdcache "
                "that wrote it, or precompute the store again"
            )
        return cls(p, group, writable=(mode == "r+"))

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        dataset: dict[str, Any],
        labels: np.ndarray,
        views: dict[str, Any],
        num_params: int,
    ) -> Store:
        """Make a new, empty store (status ``writing``) for one dataset and view set.

        ``path`` must not exist, or be an empty directory: kdcache never writes
        into a directory that holds something else.
        """
        p = Path(path)
        if p.exists():
            if not p.is_dir():
                raise StoreError(f"--out {p} is a file, not a store directory; choose another path")
            if any(child.name != LOCK_NAME for child in p.iterdir()):
                raise StoreError(
                    f"--out {p} is a non-empty directory that is not a kdcache store; "
                    "choose a new path (kdcache will not write into it)"
                )
        num_views = int(views["num_views"])
        grid = ChunkGrid(len(labels), int(views["chunk_rows"]))
        # "a": the directory may already hold our own lock file (checked above).
        group = zarr.open_group(p, mode="a")
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created": utc_now(),
            "updated": utc_now(),
            "versions": library_versions(),
            "dataset": dataset,
            "views": views,
            "teachers": {},
            "status": "writing",
        }
        group.attrs[MANIFEST_KEY] = manifest
        group.create_array("labels", data=np.asarray(labels, dtype=np.int64), compressors=None)
        group.create_array(
            "views/params",
            shape=(num_views, grid.num_samples, num_params),
            chunks=(1, grid.chunk_rows, max(num_params, 1)),
            dtype="int32",
            fill_value=-1,
            compressors=None,
            attributes={"names": list(views.get("param_names", []))},
        )
        # One zarr chunk per element: distributed ranks write disjoint records
        # without read-modify-write of a shared chunk (which loses data).
        group.create_array(
            "views/checksums",
            shape=(num_views, grid.num_chunks),
            chunks=(1, 1),
            dtype="uint64",
            fill_value=0,
            compressors=None,
        )
        return cls(p, group, writable=True)

    # ------------------------------------------------------------ manifest
    def save_manifest(self) -> None:
        """Write the in-memory manifest back to the group attribute."""
        self._require_writable()
        self.manifest["updated"] = utc_now()
        self.group.attrs[MANIFEST_KEY] = self.manifest

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path} is open read-only")

    @property
    def num_samples(self) -> int:
        return int(self.manifest["dataset"]["num_samples"])

    @property
    def num_views(self) -> int:
        return int(self.manifest["views"]["num_views"])

    @property
    def grid(self) -> ChunkGrid:
        return ChunkGrid(self.num_samples, int(self.manifest["views"]["chunk_rows"]))

    @property
    def status(self) -> str:
        return str(self.manifest["status"])

    def teacher_names(self) -> list[str]:
        return list(self.manifest["teachers"])

    def teacher_card(self, name: str | None = None) -> dict[str, Any]:
        """The card of teacher ``name`` (or the only teacher when ``name`` is None)."""
        return self.manifest["teachers"][self.resolve_teacher(name)]

    def resolve_teacher(self, name: str | None) -> str:
        """Pick a teacher by name, or the only one; a clear error otherwise."""
        names = self.teacher_names()
        if name is None:
            if len(names) == 1:
                return names[0]
            if not names:
                raise StoreIncompleteError(f"{self.path} holds no teacher yet; run `kdcache precompute`")
            raise StoreError(f"{self.path} holds several teachers ({', '.join(names)}); pass --teacher NAME")
        if name not in names:
            raise StoreError(
                f"{self.path} has no teacher {name!r}; it has: {', '.join(names) or 'none'}"
            )
        return name

    def require_complete(self, teacher: str | None = None) -> str:
        """Refuse a store (or teacher) that is still being written; returns the teacher name."""
        name = self.resolve_teacher(teacher)
        if self.teacher_card(name)["status"] != "complete":
            raise StoreIncompleteError(
                f"teacher {name!r} in {self.path} is still being written (or its run was "
                "interrupted); finish it by re-running the same `kdcache precompute` command"
            )
        return name

    # --------------------------------------------------------------- arrays
    def labels(self) -> np.ndarray:
        return np.asarray(self.group["labels"][:], dtype=np.int64)

    def params(self) -> zarr.Array:
        return self.group["views/params"]  # type: ignore[return-value]

    def view_checksums(self) -> zarr.Array:
        return self.group["views/checksums"]  # type: ignore[return-value]

    def logits(self, teacher: str) -> zarr.Array:
        return self.group[f"teachers/{teacher}/logits"]  # type: ignore[return-value]

    def logit_checksums(self, teacher: str) -> zarr.Array:
        return self.group[f"teachers/{teacher}/checksums"]  # type: ignore[return-value]

    def has_array(self, key: str) -> bool:
        return key in self.group

    def add_teacher(self, name: str, card: dict[str, Any], num_classes: int, encoding: str, codec: str) -> None:
        """Create the arrays of a new teacher and record its card (status ``writing``)."""
        self._require_writable()
        if encoding not in ENCODINGS:
            raise StoreError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
        grid = self.grid
        self.group.create_array(
            f"teachers/{name}/logits",
            shape=(self.num_views, grid.num_samples, num_classes),
            chunks=(1, grid.chunk_rows, num_classes),
            dtype=encoding,
            # NaN, never 0: a chunk that was never written cannot pass for logits.
            fill_value=np.nan,
            compressors=_compressors(codec),
        )
        self.group.create_array(
            f"teachers/{name}/checksums",
            shape=(self.num_views, grid.num_chunks),
            chunks=(1, 1),
            dtype="uint64",
            fill_value=0,
            compressors=None,
        )
        self.manifest["teachers"][name] = {**card, "status": "writing", "started": utc_now()}
        self.manifest["status"] = "writing"
        self.save_manifest()

    def iter_chunks(self) -> Iterator[tuple[int, int]]:
        """All (view, chunk) pairs in write order."""
        for v in range(self.num_views):
            for j in range(self.grid.num_chunks):
                yield v, j

    def read_logits_chunk(self, teacher: str, view: int, chunk: int) -> np.ndarray:
        start, stop = self.grid.bounds(chunk)
        return np.asarray(self.logits(teacher)[view, start:stop])

    def read_params_chunk(self, view: int, chunk: int) -> np.ndarray:
        start, stop = self.grid.bounds(chunk)
        return np.asarray(self.params()[view, start:stop])

    def stats_group_path(self, teacher: str) -> str:
        return f"teachers/{teacher}/stats"

    def disk_bytes(self) -> int:
        return dir_size(self.path)


def sync_store(path: Path) -> None:
    """Flush the store's files to stable storage before it is declared complete."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

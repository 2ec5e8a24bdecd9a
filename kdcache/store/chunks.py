"""How a view's rows are cut into chunks, how a chunk is checksummed, and what is recorded about the platform."""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from kdcache import __version__
from kdcache.errors import StoreError

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


# What must match for a teacher's logits to be reproducible bit for bit: the kernels (instruction set,
# machine, device, CUDA/cuDNN) and the libraries that compute or render (torch, torchvision, numpy).
BITWISE_KEYS = ("cpu_capability", "machine", "torch", "torchvision", "numpy", "device", "cuda", "cudnn")


def platform_record(device: str = "cpu") -> dict[str, Any]:
    """Where a teacher is scored: :func:`library_versions`, the device type, and CUDA/cuDNN when on cuda.

    Recorded in each teacher card when it is scored (a second teacher or a
    resume may run on another machine than the one that created the store).
    """
    import torch

    dev = torch.device(device)
    record: dict[str, Any] = {**library_versions(), "device": dev.type, "cuda": None, "cudnn": None}
    if dev.type == "cuda":
        record["cuda"] = torch.version.cuda
        record["cudnn"] = torch.backends.cudnn.version()
        record["gpu"] = torch.cuda.get_device_name(dev)
    return record


def platform_differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: then X, now Y`` for every :data:`BITWISE_KEYS` entry that differs (a key ``then`` lacks is skipped)."""
    return [f"{k}: {then.get(k)} vs {now.get(k)}" for k in BITWISE_KEYS if k in then and then.get(k) != now.get(k)]


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


def checksum(*arrays: np.ndarray) -> int:
    """A 64-bit BLAKE2b digest of arrays' bytes (each C order, one after the other), never 0 (0 means
    'not written'). One array is the record of a float16/float32 chunk; an encoding stored in several
    parts (int8, topk, sample) is hashed part after part in the order docs/store-format.md lists."""
    h = hashlib.blake2b(digest_size=8)
    for array in arrays:
        data = np.ascontiguousarray(array)
        # Hash the array's memory in place (no copy); an empty array has no buffer to view.
        h.update(memoryview(data).cast("B") if data.size else b"")
    digest = h.digest()
    value = int.from_bytes(digest, "little")
    return value or 1


def compressors(codec: str) -> Any:
    """The zarr v3 codec chain of a ``--codec`` choice (spec codecs only, readable by any v3 reader)."""
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

    def covering(self, start: int, stop: int) -> range:
        """The chunks holding samples [start, stop)."""
        if stop <= start:
            return range(0)
        return range(start // self.chunk_rows, (stop - 1) // self.chunk_rows + 1)


def labels_record(labels: np.ndarray) -> str:
    """The manifest's record of a store's labels: :func:`checksum` of them as little-endian int64, 16 hex digits."""
    return f"{checksum(np.asarray(labels).astype('<i8')):016x}"


def chunk_missing(arr: Any, index: tuple[int, ...]) -> bool:
    """Whether zarr chunk ``index`` of ``arr`` has no object in its store (deleted or never written).

    zarr reads a missing chunk as its fill value without a word, so a checksum
    mismatch alone cannot tell a lost chunk from a changed one; asked only on
    that error path, this costs one listing request there.
    """
    from zarr.core.sync import sync  # zarr's own bridge to its async store API

    path = arr.store_path
    key = f"{path.path}/{arr.metadata.encode_chunk_key(index)}" if path.path else arr.metadata.encode_chunk_key(index)
    return not sync(path.store.exists(key))

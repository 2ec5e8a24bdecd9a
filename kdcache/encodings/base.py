"""What every logit encoding provides: its zarr parts, encode, decode, and its byte cost.

An encoding turns a chunk of raw float32 teacher logits (rows, C) into a few
arrays ("parts"), each stored as its own zarr array under the teacher's node
with chunks ``(1, R, ...)`` (one view, R rows), and turns those parts back into
what a loss reads: dense logits (``kind == "dense"``), or for a sampled
encoding dense *pseudo-logits* ``T·log q̂`` whose softmax at the stored
temperature T is the sampled probability estimate (``kind == "probabilities"``).
The exact byte layout of every part is the contract of ``docs/store-format.md``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdcache.errors import StoreCorruptError

# log-probability given to a class an encoding holds nothing for: exp(-1000) is an exact 0 in
# float32 and float64 at every temperature >= 1/8, yet the value stays finite (0·log 0 = 0 in the losses).
EMPTY_LOG_PROB = -1000.0


@dataclass(frozen=True)
class Part:
    """One stored array of an encoding: ``teachers/<name>/<name>`` of shape (V, N, *trailing)."""

    name: str
    trailing: tuple[int, ...]
    dtype: str
    fill: Any

    def row_bytes(self) -> int:
        return int(np.prod(self.trailing, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Rows:
    """Which (view, samples) of which store and teacher a chunk of logits is (sampled encodings draw from it)."""

    seed: int
    view: int
    samples: np.ndarray  # (rows,) sample index of every row
    teacher: str


class Encoding(ABC):
    """A logit encoding, parsed from its spec string (``float16``, ``int8``, ``topk:32``, ``sample:64@4``)."""

    spec: str
    kind: str = "dense"  # "dense": decodes to logits; "probabilities": to probabilities at `temperature`
    temperature: float | None = None  # the temperature a "probabilities" encoding was drawn at

    @abstractmethod
    def parts(self, num_classes: int) -> list[Part]:
        """The stored arrays, in checksum order."""

    @abstractmethod
    def encode(self, logits: np.ndarray, rows: Rows) -> dict[str, np.ndarray]:
        """Encode float32 logits (rows, C) into ``{part name: (rows, *trailing) array}``."""

    @abstractmethod
    def decode(self, parts: dict[str, np.ndarray], num_classes: int, temperature: float = 1.0,
               tail: str = "temperature") -> np.ndarray:
        """Dense (rows, C) logits (or pseudo-logits) from the stored parts."""

    @abstractmethod
    def replay_mismatch(self, stored: dict[str, np.ndarray], recomputed: np.ndarray, slack: np.ndarray) -> float:
        """How far stored parts are from what this encoding guarantees about logits computed again elsewhere.

        ``recomputed`` (rows, C) are the teacher's float32 logits computed
        again (on another platform than the store's: other kernels round
        differently, so the stored bits cannot be expected), and ``slack``
        (rows,) bounds, per row, how far each logit the store encoded may be
        from its recomputed value. Returns the worst ratio, over every check
        of :attr:`replay_rule` and every row, of a difference to its bound:
        at most 1 when the stored parts are an encoding this encoder could
        have written for some logits within ``slack`` of ``recomputed``.
        NaN counts as infinitely far. A row no encoder writes (an id that is
        not a class, counts that do not add up) raises :class:`StoreCorruptError`.
        """

    @property
    @abstractmethod
    def replay_rule(self) -> str:
        """One sentence: what :meth:`replay_mismatch` checks (the report and the docs state it)."""

    def check(self, num_classes: int) -> str | None:
        """Why this encoding cannot store ``num_classes`` classes (a message), or None."""
        return None

    def class_bytes(self) -> int:
        """Bytes per class that size a new store's chunks: 2 for a compact encoding, so that a chunk
        decodes to about as many rows as a float16 chunk holds (a float encoding: its width)."""
        return 2

    def row_bytes(self, num_classes: int) -> int:
        """Stored bytes per (view, sample) row, before any codec."""
        return sum(p.row_bytes() for p in self.parts(num_classes))

    def pack(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """The parts of a chunk side by side as one (rows, row_bytes) uint8 array (a reader's compact row).

        A reader gathers the rows a batch needs from packed chunks and decodes
        only those (:meth:`unpack` then :meth:`decode`): a batch is rebuilt
        dense once, never a whole chunk.
        """
        rows = next(iter(parts.values())).shape[0]
        return np.concatenate([np.ascontiguousarray(p).reshape(rows, -1).view(np.uint8) for p in parts.values()],
                              axis=1)

    def unpack(self, packed: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
        """The inverse of :meth:`pack`."""
        out, at = {}, 0
        for part in self.parts(num_classes):
            width = part.row_bytes()
            block = np.ascontiguousarray(packed[:, at : at + width])
            out[part.name] = block.view(part.dtype).reshape(packed.shape[0], *part.trailing)
            at += width
        return out

    @property
    def lossless_dense(self) -> bool:
        """Whether the stored values are the logits themselves (float16/float32)."""
        return False

    @property
    def decode_depends_on_loss(self) -> bool:
        """Whether the dense rows depend on the loss that reads them (its temperature, or whether it
        may consume a sample): top-K's rebuilt tail and a sample's pseudo-logits do; float and int8 do not."""
        return self.kind != "dense"

    def __str__(self) -> str:
        return self.spec


def id_dtype(num_classes: int) -> str:
    """Class ids fit uint16 below 65,535 classes (65,535 marks an empty slot); int32 beyond."""
    return "uint16" if num_classes < 65535 else "int32"


def empty_id(num_classes: int) -> int:
    return int(np.iinfo(np.dtype(id_dtype(num_classes))).max)


def teacher_words(teacher: str) -> list[int]:
    """Two 32-bit words identifying a teacher name (for generators keyed by the teacher)."""
    digest = hashlib.sha256(teacher.encode("utf-8")).digest()
    return [int.from_bytes(digest[0:4], "little"), int.from_bytes(digest[4:8], "little")]


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log Σ exp(x) along ``axis`` in float64; rows of all -inf give -inf (no warning)."""
    m = np.max(x, axis=axis, keepdims=True)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - safe), axis=axis, keepdims=True)) + safe
    return np.squeeze(out, axis=axis)


def half_ulp(values: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """Half the spacing of ``dtype`` at each value's magnitude (float64): the most rounding to it moves a value."""
    return np.spacing(np.abs(np.asarray(values, dtype=np.float64)).astype(dtype)).astype(np.float64) / 2


def ratio(diff: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """``diff / bound`` elementwise, with an exact match (0) at ratio 0 even against a zero bound."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(diff == 0, 0.0, np.asarray(diff, dtype=np.float64) / bound)


def worst(ratios: np.ndarray) -> float:
    """The largest of ``ratios`` as a float; NaN (a NaN stored or recomputed value) counts as infinite."""
    r = np.asarray(ratios, dtype=np.float64)
    if r.size == 0:
        return 0.0
    return float(np.where(np.isnan(r), np.inf, r).max())


def damaged(encoding: Encoding, what: str) -> StoreCorruptError:
    """The one-line error for a row of ``encoding`` that no encoder writes (its checksum record matched it)."""
    return StoreCorruptError(f"a stored {encoding.spec} row {what}, which no encoder writes: the chunk is "
                             "damaged, though it matches its checksum record; restore the store from a copy "
                             "or precompute it again into a new --out")

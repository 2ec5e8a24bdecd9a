"""``sample:N[@T]``: N class ids drawn from the teacher's softmax at temperature T, stored as ids + counts.

The draw of row (sample i, view v) of teacher ``name`` in a store with seed
``s`` uses its own generator, numpy ``PCG64(SeedSequence([s, i, v, w0, w1, TAG]))``
with ``(w0, w1)`` the first 8 bytes of SHA-256(name) as two little-endian
uint32 and ``TAG = 0x5A4D_0001``, and draws the counts with
``Generator.multinomial(N, softmax(z/T))`` (float64). The draw therefore
replays: the same row gives the same ids whatever the chunking, the order of
work, or whether it was made by ``precompute`` or ``convert``.

Layout: fixed slots. ``S = min(N, C)`` slots per row: ``sample_ids`` (S,)
uint16 (int32 from 65,535 classes) holding the drawn ids ascending, then the
empty-slot marker (the dtype's largest value); ``sample_counts`` (S,) uint8
(uint16 when N > 255) holding each id's count, 0 in empty slots. The counts
of a row sum to N. ``q̂ = counts / N`` is an unbiased estimate of
``softmax(z/T)``.

Fixed slots vs ragged (ids + counts + per-row offsets): a ragged layout stores
only the distinct ids (about ``Σ_c 1 − (1 − q_c)^N``: a handful for a
confident teacher at T=1, many more at T=4) but has no fixed chunk shape, so
a chunk could not be read or checksummed as one zarr block and a row's
position would depend on every row before it. Fixed slots keep the store's
chunk grid and cost ``3·S`` bytes a row; the empty slots are constant bytes,
which ``--codec zstd`` removes almost entirely.
"""

from __future__ import annotations

import math
import re

import numpy as np

from kdcache.encodings.base import (EMPTY_LOG_PROB, Encoding, Part, Rows, damaged, empty_id, id_dtype, logsumexp,
                                    ratio, teacher_words, worst)
from kdcache.encodings.registry import EncodingType, register_encoding
from kdcache.validate import Invalid

SAMPLE_TAG = 0x5A4D_0001
# Off-platform replay fails a drawn class whose drawing probability may have been below DRAW_FLOOR / N: a
# correct store draws such a class with chance below DRAW_FLOOR per class and row.
DRAW_FLOOR = 1e-12


def row_generator(seed: int, sample: int, view: int, teacher: str) -> np.random.Generator:
    """The generator of one row's draw (see the module docstring)."""
    words = [int(seed), int(sample), int(view), *teacher_words(teacher), SAMPLE_TAG]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


class SampleEncoding(Encoding):
    """N draws from softmax(z/T), stored as distinct ids with counts in S = min(N, C) fixed slots."""

    name = "sample"
    kind = "probabilities"

    def __init__(self, n: int, temperature: float) -> None:
        self.n = int(n)
        self.temperature = float(temperature)
        self.spec = f"{self.name}:{self.n}@{self.temperature:g}"

    def slots(self, num_classes: int) -> int:
        return min(self.n, num_classes)

    def parts(self, num_classes: int) -> list[Part]:
        s = self.slots(num_classes)
        return [Part("sample_ids", (s,), id_dtype(num_classes), empty_id(num_classes)),
                Part("sample_counts", (s,), "uint8" if self.n <= 255 else "uint16", 0)]

    def target(self, logits: np.ndarray) -> np.ndarray:
        """The distribution drawn from: softmax(z/T) in float64, (rows, C)."""
        z = np.asarray(logits, dtype=np.float32).astype(np.float64) / self.temperature
        return np.exp(z - logsumexp(z)[:, None])

    def encode(self, logits: np.ndarray, rows: Rows) -> dict[str, np.ndarray]:
        q = self.target(logits)
        num_classes = q.shape[1]
        s = self.slots(num_classes)
        ids = np.full((q.shape[0], s), empty_id(num_classes), dtype=id_dtype(num_classes))
        counts = np.zeros((q.shape[0], s), dtype="uint8" if self.n <= 255 else "uint16")
        for r, sample in enumerate(rows.samples):
            p = q[r] / q[r].sum()  # multinomial checks Σp ≤ 1 to 1e-12; float64 round-off can exceed it
            drawn = row_generator(rows.seed, int(sample), rows.view, rows.teacher).multinomial(self.n, p)
            hit = np.flatnonzero(drawn)
            ids[r, : len(hit)] = hit
            counts[r, : len(hit)] = drawn[hit]
        return {"sample_ids": ids, "sample_counts": counts}

    def _drawn(self, parts: dict[str, np.ndarray], num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, slot) of every slot holding a count, and its class id; a count on an id that is not a class
        (the empty-slot marker, say) raises :class:`StoreCorruptError` instead of an IndexError."""
        ids = parts["sample_ids"].astype(np.int64)
        rows, slots = np.nonzero(parts["sample_counts"])
        drawn = ids[rows, slots]
        bad = (drawn < 0) | (drawn >= num_classes)
        if bad.any():
            at = int(np.flatnonzero(bad)[0])
            marker = "the empty-slot marker, " if drawn[at] == empty_id(num_classes) else ""
            raise damaged(self, f"holds the count {int(parts['sample_counts'][rows[at], slots[at]])} in slot "
                          f"{int(slots[at])}, whose id {int(drawn[at])} is {marker}not a class (0..{num_classes - 1})")
        return rows, slots, drawn

    def probabilities(self, parts: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
        """``q̂ = counts / N`` as a dense (rows, C) float32 array."""
        self._drawn(parts, num_classes)  # a damaged row is refused in one line
        ids = parts["sample_ids"].astype(np.int64)
        counts = parts["sample_counts"].astype(np.float32)
        used = counts > 0
        out = np.zeros((ids.shape[0], num_classes + 1), dtype=np.float32)
        # Empty slots go to a spare column that is dropped.
        np.put_along_axis(out, np.where(used, ids, num_classes), counts / np.float32(self.n), axis=1)
        return out[:, :num_classes]

    def decode(self, parts: dict[str, np.ndarray], num_classes: int, temperature: float = 1.0,
               tail: str = "temperature") -> np.ndarray:
        """Pseudo-logits ``T·log q̂`` (T the stored temperature; undrawn classes ``T·(−1000)``), so that
        softmax(pseudo / T) is exactly q̂ for a loss reading the teacher at T."""
        counts = parts["sample_counts"]
        rows, slots, drawn = self._drawn(parts, num_classes)
        # Fill, then scatter the few drawn classes: the log is taken of the counts only.
        out = np.full((counts.shape[0], num_classes), np.float32(self.temperature * EMPTY_LOG_PROB),
                      dtype=np.float32)
        logq = np.log(counts[rows, slots].astype(np.float32) / np.float32(self.n))
        out[rows, drawn] = np.float32(self.temperature) * logq
        return out

    def replay_mismatch(self, stored: dict[str, np.ndarray], recomputed: np.ndarray, slack: np.ndarray) -> float:
        """The structure of the draws, and that each drawn class could have been drawn; not the draws.

        Another platform's logits ``z'`` (within ``s`` of the recomputed ``z``)
        give other probabilities, and a multinomial draw from them may differ
        anywhere, so the ids and counts are compared bit for bit only on the
        store's platform. Here the row must be one an encoder writes: drawn ids
        ascending and distinct, each a class, in the first slots, the rest
        empty (the marker, count 0), counts summing to N (else
        :class:`StoreCorruptError`). And a drawn class ``c`` must have had a
        chance: ``softmax(z'/T)_c <= softmax(z/T)_c·exp(2s/T)``, and a class
        of probability p is drawn at all with chance at most N·p, so the ratio
        ``DRAW_FLOOR / (N·softmax(z/T)_c·exp(2s/T))`` exceeds 1 only where a
        correct store had a chance below :data:`DRAW_FLOOR` of drawing it.
        """
        ids = stored["sample_ids"].astype(np.int64)
        counts = stored["sample_counts"].astype(np.int64)
        z = np.asarray(recomputed, dtype=np.float64)
        rows, _, drawn = self._drawn(stored, z.shape[1])
        used = counts > 0
        if (counts.sum(axis=1) != self.n).any():
            raise damaged(self, f"holds counts summing to {int(counts.sum(axis=1)[counts.sum(axis=1) != self.n][0])}"
                          f", not N = {self.n}")
        if (used[:, 1:] & ~used[:, :-1]).any() or (ids[~used] != empty_id(z.shape[1])).any():
            raise damaged(self, "has a drawn slot after an empty one, or an empty slot (count 0) holding a class id")
        if (np.diff(np.where(used, ids, np.iinfo(np.int64).max), axis=1) <= 0)[used[:, 1:]].any():
            raise damaged(self, "holds drawn ids that are not ascending and distinct")
        s = np.asarray(slack, dtype=np.float64)
        p = self.target(z)[rows, drawn] * np.exp(2 * s[rows] / self.temperature)
        return worst(ratio(np.full(p.shape, DRAW_FLOOR), self.n * p))

    @property
    def replay_rule(self) -> str:
        return ("draws are compared bit for bit only on the store's platform; here only their structure (valid, "
                f"ascending, distinct class ids; counts summing to N = {self.n}) and that every drawn class had "
                f"probability at least {DRAW_FLOOR:g}/N at the recomputed logits (within the slack) are checked")


def _parse(args: str | None) -> SampleEncoding:
    """``N[@T]``: 1 <= N <= 65535 draws at a finite temperature T > 0 (default 1)."""
    m = re.fullmatch(r"(\d+)(?:@([0-9.eE+-]+))?", args or "")
    if m is None:
        raise Invalid("must be sample:N[@T]")
    n = int(m.group(1))
    try:
        t = float(m.group(2)) if m.group(2) else 1.0
    except ValueError:
        t = math.nan
    if not (1 <= n <= 65535 and math.isfinite(t) and t > 0):
        raise Invalid("must be sample:N[@T] with 1 <= N <= 65535 and T > 0")
    return SampleEncoding(n, t)


register_encoding(EncodingType(SampleEncoding.name, "sample:N[@T]", "N draws from softmax at T, default T=1",
                               _parse, kind="probabilities", exact_form="sample:N@{T}"))

"""``topk:K``: the K largest logits with their ids, the row's log-sum-exp and tail log-partitions.

Parts (docs/store-format.md, "Encodings"), per row:

* ``topk_ids`` (K,) uint16 (int32 from 65,535 classes): the K largest logits'
  class ids, largest first (ties: the lower id first);
* ``topk_values`` (K,) float16: those logits, rounded to nearest;
* ``lse`` () float32: ``log Σ_c exp(z_c)`` over ALL classes (float64 sums);
* ``tail_lse`` (4,) float32: ``A_R(β) = log Σ_{j∉top} exp(β·z_j)`` at
  β = 1, 1/2, 1/4, 1/8 (:data:`BETAS`), the tail's log-partition.

The tail mass at T=1 is ``M = exp(tail_lse[0] − lse)``, exact to float32
(computed in float64 from the float32 logits). :meth:`TopKEncoding.decode` is
the documented dense-rebuild rule.
"""

from __future__ import annotations

import math
import re

import numpy as np

from kdcache.encodings.base import (EMPTY_LOG_PROB, Encoding, Part, Rows, damaged, empty_id, half_ulp, id_dtype,
                                    logsumexp, ratio, worst)
from kdcache.encodings.registry import EncodingType, register_encoding
from kdcache.validate import Invalid

BETAS = (1.0, 0.5, 0.25, 0.125)
TAILS = ("temperature", "constant")


def tail_log_partition(tail_lse: np.ndarray, tail_count: int, beta: float) -> np.ndarray:
    """``A_R(β)`` per row, interpolated from the stored points.

    A_R is convex in β with ``A_R(0) = log(C − K)``; between the stored points
    (and between 0 and 1/8) it is interpolated linearly in β, which
    over-estimates it slightly (a chord lies above a convex function); above
    β = 1 (T < 1) the last segment is extended.
    """
    xs = (0.0,) + tuple(sorted(BETAS))
    i = min(max(int(np.searchsorted(xs, beta, side="right")) - 1, 0), len(xs) - 2)

    def column(x: float) -> np.ndarray:  # only the two points around beta are read
        if x == 0.0:
            return np.full(tail_lse.shape[0], math.log(tail_count))
        return tail_lse[:, BETAS.index(x)].astype(np.float64)

    lo, hi = column(xs[i]), column(xs[i + 1])
    return lo + (beta - xs[i]) / (xs[i + 1] - xs[i]) * (hi - lo)


class TopKEncoding(Encoding):
    """K largest logits + ids + log-sum-exp + tail log-partitions (see the module docstring)."""

    name = "topk"

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self.spec = f"{self.name}:{self.k}"

    def check(self, num_classes: int) -> str | None:
        if not 1 <= self.k < num_classes:
            return f"topk:K needs 1 <= K < C = {num_classes} (got K={self.k}); use float16 to keep every class"
        return None

    def parts(self, num_classes: int) -> list[Part]:
        k = self.k
        return [Part("topk_ids", (k,), id_dtype(num_classes), empty_id(num_classes)),
                Part("topk_values", (k,), "float16", np.nan),
                Part("lse", (), "float32", np.nan),
                Part("tail_lse", (len(BETAS),), "float32", np.nan)]

    def encode(self, logits: np.ndarray, rows: Rows) -> dict[str, np.ndarray]:
        z = np.asarray(logits, dtype=np.float32)
        z64 = z.astype(np.float64)
        # Stable sort of −z: ties keep the lower class id first, so the top set is a function of the row.
        ids = np.argsort(-z64, axis=1, kind="stable")[:, : self.k]
        tail = z64.copy()
        np.put_along_axis(tail, ids, -np.inf, axis=1)
        return {
            "topk_ids": ids.astype(id_dtype(z.shape[1])),
            "topk_values": np.take_along_axis(z, ids, axis=1).astype(np.float16),
            "lse": logsumexp(z64).astype(np.float32),
            "tail_lse": np.stack([logsumexp(b * tail) for b in BETAS], axis=1).astype(np.float32),
        }

    @property
    def decode_depends_on_loss(self) -> bool:
        return True  # the rebuilt tail is the tail mass at the loss's temperature

    def replay_mismatch(self, stored: dict[str, np.ndarray], recomputed: np.ndarray, slack: np.ndarray) -> float:
        """Ids, values, log-sum-exp and tail log-partitions against the recomputed logits ``z``.

        The stored row encodes logits ``z'`` with ``|z' − z| <= s`` (``slack``) per class. Then:

        * the ids are a top-K set of ``z'``: every stored id's ``z`` is at least every other class's
          ``z`` − 2s (so near-ties, within 2s, may be swapped; the ids' order is not compared);
        * each value is ``float16(z'_i)``: within half an ulp of float16 + s of ``z_i``;
        * ``lse`` is ``float32(LSE(z'))`` and LSE moves at most ``max |z' − z|``: within
          s + half an ulp of float32 of ``LSE(z)``;
        * ``tail_lse[β]`` is ``float32(log Σ_{j∉ids} exp(β·z'_j))`` over the STORED ids' complement,
          which moves at most β·s: within β·s + half an ulp of float32 of the same sum over ``z``.

        A float64 round-off margin of ``C·2^-50·(1 + |value|)`` is added to the two log-partitions.
        """
        ids = stored["topk_ids"].astype(np.int64)
        z = np.asarray(recomputed, dtype=np.float64)
        rows, num_classes = z.shape
        if ((ids < 0) | (ids >= num_classes)).any():
            raise damaged(self, f"holds the top-K id {int(ids[(ids < 0) | (ids >= num_classes)][0])}, not a class "
                          f"(0..{num_classes - 1})")
        if (np.diff(np.sort(ids, axis=1), axis=1) == 0).any():
            raise damaged(self, "holds a top-K id twice")
        s = np.asarray(slack, dtype=np.float64)
        top = np.zeros((rows, num_classes), dtype=bool)
        np.put_along_axis(top, ids, True, axis=1)
        at_ids = np.take_along_axis(z, ids, axis=1)
        tail = np.where(top, -np.inf, z)
        gap = ratio(np.maximum(tail.max(axis=1) - at_ids.min(axis=1), 0.0), 2 * s)
        v = stored["topk_values"].astype(np.float64)
        values = ratio(np.abs(v - at_ids), half_ulp(v, "float16") + s[:, None])
        margin = num_classes * 2.0**-50
        lse = stored["lse"].astype(np.float64)
        lse_ratio = ratio(np.abs(lse - logsumexp(z)), s + half_ulp(lse, "float32") + margin * (1 + np.abs(lse)))
        a = stored["tail_lse"].astype(np.float64)
        here = np.stack([logsumexp(b * tail) for b in BETAS], axis=1)
        betas = np.asarray(BETAS)[None, :]
        tail_ratio = ratio(np.abs(a - here), betas * s[:, None] + half_ulp(a, "float32") + margin * (1 + np.abs(a)))
        return max(worst(gap), worst(values), worst(lse_ratio), worst(tail_ratio))

    @property
    def replay_rule(self) -> str:
        return ("the stored ids a top-K set of the recomputed logits up to near-ties within 2 x slack, each stored "
                "value within half an ulp of float16 + slack of the recomputed logit at its id, lse within slack "
                "and each tail log-partition at beta within beta x slack (each + half an ulp of float32) of "
                "those of the recomputed logits (the tail taken as the classes the store does not list)")

    def decode(self, parts: dict[str, np.ndarray], num_classes: int, temperature: float = 1.0,
               tail: str = "temperature") -> np.ndarray:
        """The dense-rebuild rule: the top K logits as stored, every other class one constant ``c``.

        ``c`` (per row) is chosen so that the rebuilt row's tail mass is right:

        * at T=1 (and with ``tail="constant"`` at every T):
          ``c = log M − log(1 − M) + LSE(v) − log(C − K)`` with ``M = exp(tail_lse[0] − lse)``,
          so softmax(rebuilt) gives the tail exactly mass M and each top class
          ``(1 − M)·softmax(v)_i`` (the stored top-K probabilities, to the
          float16 rounding of the values);
        * at T ≠ 1 with ``tail="temperature"``: ``c = T·(Â_R(1/T) − log(C − K))``
          with Â_R interpolated from the stored points, so softmax(rebuilt / T)
          gives the tail the mass it has at T (exactly at T = 2, 4, 8).
        """
        ids = parts["topk_ids"].astype(np.int64)
        v = parts["topk_values"].astype(np.float32)
        n = num_classes - self.k
        if tail not in TAILS:
            raise ValueError(f"tail must be one of {TAILS}")
        if tail == "constant" or temperature == 1.0:
            log_m = parts["tail_lse"][:, 0].astype(np.float64) - parts["lse"].astype(np.float64)
            log_m = np.minimum(log_m, -1e-12)  # M < 1: the top-1 class alone holds at least 1/C
            with np.errstate(divide="ignore"):
                c = log_m - np.log(-np.expm1(log_m)) + logsumexp(v.astype(np.float64)) - math.log(n)
        else:
            beta = 1.0 / float(temperature)
            c = (tail_log_partition(parts["tail_lse"], n, beta) - math.log(n)) / beta
        # An underflowed tail (M = 0) stays finite: far enough below the top that exp(·/T) is 0.
        floor = v.max(axis=1).astype(np.float64) + EMPTY_LOG_PROB
        c = np.maximum(np.nan_to_num(c, nan=-np.inf, neginf=-np.inf), floor).astype(np.float32)
        out = np.empty((len(c), num_classes), dtype=np.float32)
        out[...] = c[:, None]
        # Scatter through flat indices (cheaper than put_along_axis for a batch of rows).
        flat = ids + (np.arange(len(c)) * num_classes)[:, None]
        out.reshape(-1)[flat.reshape(-1)] = v.reshape(-1)
        return out


def _parse(args: str | None) -> TopKEncoding:
    """``K``, an integer in [1, 65535) (ids are stored as uint16 below 65,535 classes)."""
    if args is None or not re.fullmatch(r"\d+", args) or not 1 <= int(args) < 65535:
        raise Invalid("must be topk:K with 1 <= K < 65535")
    return TopKEncoding(int(args))


register_encoding(EncodingType(TopKEncoding.name, "topk:K", "K largest logits + exact T=1 tail mass", _parse))

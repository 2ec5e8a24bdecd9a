"""Encodings that keep one value per class: float16, float32 and per-row affine int8."""

from __future__ import annotations

import numpy as np

from collections.abc import Callable

from kdcache.encodings.base import Encoding, Part, Rows, damaged, half_ulp, ratio, worst
from kdcache.encodings.registry import EncodingType, register_encoding
from kdcache.validate import Invalid


class FloatEncoding(Encoding):
    """The raw logits in float16 (rounded to nearest) or float32 (exact): part ``logits`` (C,)."""

    def __init__(self, dtype: str) -> None:
        self.spec = dtype
        self.dtype = dtype

    def parts(self, num_classes: int) -> list[Part]:
        # NaN, never 0: a chunk that was never written cannot pass for logits.
        return [Part("logits", (num_classes,), self.dtype, np.nan)]

    def encode(self, logits: np.ndarray, rows: Rows) -> dict[str, np.ndarray]:
        return {"logits": np.asarray(logits, dtype=np.float32).astype(self.dtype)}

    def decode(self, parts: dict[str, np.ndarray], num_classes: int, temperature: float = 1.0,
               tail: str = "temperature") -> np.ndarray:
        return parts["logits"]  # the stored dtype: readers upcast where they compute

    def class_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize)

    def replay_mismatch(self, stored: dict[str, np.ndarray], recomputed: np.ndarray, slack: np.ndarray) -> float:
        """Each stored value against the recomputed logit: half an ulp of the dtype (its rounding) + slack."""
        v = stored["logits"].astype(np.float64)
        diff = np.abs(v - np.asarray(recomputed, dtype=np.float64))
        return worst(ratio(diff, half_ulp(v, self.dtype) + np.asarray(slack, dtype=np.float64)[:, None]))

    @property
    def replay_rule(self) -> str:
        return f"every stored value within half an ulp of {self.dtype} at its magnitude + slack of the recomputed logit"

    @property
    def lossless_dense(self) -> bool:
        return True


class Int8Encoding(Encoding):
    """Per-row affine 8-bit codes: part ``q`` (C,) uint8 and part ``affine`` (2,) float32 = [hi, step].

    ``hi`` is the row's largest logit (stored exactly) and ``step = (hi − lo) / 255``
    (float32); ``q = 255 − rint((hi − z) / step)`` in float64. Decoding is
    ``ẑ = hi − step·(255 − q)`` in float32, so the row's largest logit comes
    back exactly and every logit within :meth:`bound` (``step/2`` plus float32
    round-off). A constant row has ``step = 0`` and ``q = 255``.
    """

    spec = "int8"

    def parts(self, num_classes: int) -> list[Part]:
        return [Part("q", (num_classes,), "uint8", 0), Part("affine", (2,), "float32", np.nan)]

    def encode(self, logits: np.ndarray, rows: Rows) -> dict[str, np.ndarray]:
        z = np.asarray(logits, dtype=np.float32)
        hi = z.max(axis=1)
        step = ((hi.astype(np.float64) - z.min(axis=1).astype(np.float64)) / 255.0).astype(np.float32)
        s64 = step.astype(np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(s64 > 0, np.rint((hi.astype(np.float64)[:, None] - z.astype(np.float64)) / s64), 0.0)
        q = (255 - np.clip(k, 0, 255)).astype(np.uint8)
        return {"q": q, "affine": np.stack([hi, step], axis=1).astype(np.float32)}

    def decode(self, parts: dict[str, np.ndarray], num_classes: int, temperature: float = 1.0,
               tail: str = "temperature") -> np.ndarray:
        affine = parts["affine"]
        hi, step = affine[:, :1], affine[:, 1:2]
        # hi − step·(255 − q), in place in one float32 buffer (half the time of the plain expression, same bits).
        out = parts["q"].astype(np.float32)
        np.subtract(np.float32(255), out, out=out)
        np.multiply(out, step, out=out)
        return np.subtract(hi, out, out=out)

    def replay_mismatch(self, stored: dict[str, np.ndarray], recomputed: np.ndarray, slack: np.ndarray) -> float:
        """Codes and affine against the recomputed logits ``z``, each logit encoded within ``slack`` of ``z``.

        A code may land one quantisation step either way of the code of ``z``
        itself (a logit near a rounding boundary), so the codes are not
        compared; what holds whatever the rounding is :meth:`bound`: every
        dequantised value within ``step/2`` (+ float32 round-off) of the
        logit encoded, so within ``bound + slack`` of ``z``. The affine is
        checked too, so a damaged step cannot widen that bound: ``hi`` (the
        encoded row's largest logit, stored exactly) within ``slack`` of
        ``max z``, and ``step = float32(range / 255)`` within
        ``2·slack/255 + 2^-23·step`` of ``(max z − min z) / 255``.
        """
        affine = stored["affine"].astype(np.float64)
        broken = ~np.isfinite(affine).all(axis=1) | (affine[:, 1] < 0)
        if broken.any():
            raise damaged(self, f"has the affine [hi, step] = {stored['affine'][np.flatnonzero(broken)[0]].tolist()} "
                          "(not finite, or a negative step)")
        z = np.asarray(recomputed, dtype=np.float64)
        s = np.asarray(slack, dtype=np.float64)
        hi, step = affine[:, 0], affine[:, 1]
        decoded = self.decode(stored, z.shape[1]).astype(np.float64)
        values = ratio(np.abs(decoded - z), (self.bound(stored["affine"]) + s)[:, None])
        tiny = 2.0**-40 * (np.abs(hi) + 1)  # float64 round-off of the comparison itself
        top = ratio(np.abs(hi - z.max(axis=1)), s + tiny)
        span = ratio(np.abs(step - (z.max(axis=1) - z.min(axis=1)) / 255), 2 * s / 255 + 2.0**-23 * step + tiny)
        return max(worst(values), worst(top), worst(span))

    @property
    def replay_rule(self) -> str:
        return ("every dequantised value within half its row's step (+ float32 round-off of the stored affine) "
                "+ slack of the recomputed logit, the row's stored largest logit within slack, and its step "
                "within 2 x slack / 255 of the recomputed row's (codes themselves may round either way)")

    @staticmethod
    def bound(affine: np.ndarray) -> np.ndarray:
        """The stated per-row bound on |decoded − original|: ``step/2 + 2^-22·(|hi| + 255·step)``."""
        hi, step = affine[:, 0].astype(np.float64), affine[:, 1].astype(np.float64)
        return step / 2 + 2.0**-22 * (np.abs(hi) + 255 * step)


def _no_args(make: Callable[[], Encoding]) -> Callable[[str | None], Encoding]:
    def parse(args: str | None) -> Encoding:
        if args is not None:
            raise Invalid("takes no arguments")
        return make()

    return parse


# Registration order is the order users are shown (float16 first: the default).
for _dtype, _summary in (("float16", "default"), ("float32", "exact")):
    register_encoding(EncodingType(_dtype, _dtype, _summary, _no_args(lambda d=_dtype: FloatEncoding(d))))
register_encoding(EncodingType(Int8Encoding.spec, Int8Encoding.spec, "per-row affine", _no_args(Int8Encoding)))

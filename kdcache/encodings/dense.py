"""Encodings that keep one value per class: float16, float32 and per-row affine int8."""

from __future__ import annotations

import numpy as np

from kdcache.encodings.base import Encoding, Part, Rows


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

    @staticmethod
    def bound(affine: np.ndarray) -> np.ndarray:
        """The stated per-row bound on |decoded − original|: ``step/2 + 2^-22·(|hi| + 255·step)``."""
        hi, step = affine[:, 0].astype(np.float64), affine[:, 1].astype(np.float64)
        return step / 2 + 2.0**-22 * (np.abs(hi) + 255 * step)

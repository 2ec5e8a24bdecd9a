"""Logit encodings of a store: float16, float32, int8, topk:K, sample:N[@T] (docs/encodings.md).

:func:`parse` turns an ``--encoding`` value into an :class:`Encoding`; the
store writes and reads an encoding's parts (kdcache/store/store.py), and a
loss declares which kinds it can consume (kdcache/losses/_registry.py).
"""

from __future__ import annotations

import math
import re

from kdcache.encodings.base import EMPTY_LOG_PROB, Encoding, Part, Rows, half_ulp
from kdcache.encodings.dense import FloatEncoding, Int8Encoding
from kdcache.encodings.sample import SampleEncoding, row_generator
from kdcache.encodings.topk import BETAS, TAILS, TopKEncoding, tail_log_partition
from kdcache.errors import UsageError

__all__ = [
    "BETAS", "EMPTY_LOG_PROB", "ENCODING_HELP", "Encoding", "FloatEncoding", "Int8Encoding", "Part", "Rows",
    "SampleEncoding", "TAILS", "TopKEncoding", "half_ulp", "parse", "row_generator", "tail_log_partition",
]

ENCODING_HELP = ("float16 (default), float32 (exact), int8 (per-row affine), topk:K (K largest logits + "
                 "exact T=1 tail mass), sample:N[@T] (N draws from softmax at T, default T=1)")


def parse(spec: str) -> Encoding:
    """The encoding named by ``spec``; a bad value is a one-line :class:`UsageError`."""
    text = str(spec).strip()
    if text in ("float16", "float32"):
        return FloatEncoding(text)
    if text == "int8":
        return Int8Encoding()
    m = re.fullmatch(r"topk:(\d+)", text)
    if m and 1 <= int(m.group(1)) < 65535:
        return TopKEncoding(int(m.group(1)))
    m = re.fullmatch(r"sample:(\d+)(?:@([0-9.eE+-]+))?", text)
    if m:
        n = int(m.group(1))
        try:
            t = float(m.group(2)) if m.group(2) else 1.0
        except ValueError:
            t = math.nan
        if 1 <= n <= 65535 and math.isfinite(t) and t > 0:
            return SampleEncoding(n, t)
    raise UsageError(f"--encoding {spec!r} is not an encoding; use {ENCODING_HELP}")

"""Logit encodings of a store (docs/encodings.md), one registered :class:`EncodingType` each.

:func:`parse` turns an ``--encoding`` value into an :class:`Encoding`
through the registry (:mod:`kdcache.encodings.registry`), where each
encoding module registers its name once; the store writes and reads an
encoding's parts (kdcache/store/store.py), and a loss declares which kinds
it can consume (kdcache/losses/_registry.py). How to add an encoding:
docs/internals.md.
"""

from __future__ import annotations

from kdcache.encodings.base import EMPTY_LOG_PROB, Encoding, Part, Rows, half_ulp
from kdcache.encodings.registry import (
    ENCODINGS,
    EncodingType,
    accepted_forms,
    encoding_help,
    forms,
    parse,
    register_encoding,
)

# The built-in encodings register themselves on import, in the order users are shown them.
from kdcache.encodings.dense import FloatEncoding, Int8Encoding  # noqa: E402  (float16, float32, int8)
from kdcache.encodings.topk import BETAS, TAILS, TopKEncoding, tail_log_partition  # noqa: E402
from kdcache.encodings.sample import SampleEncoding, row_generator  # noqa: E402

__all__ = [
    "BETAS", "EMPTY_LOG_PROB", "ENCODINGS", "Encoding", "EncodingType", "FloatEncoding",
    "Int8Encoding", "Part", "Rows", "SampleEncoding", "TAILS", "TopKEncoding", "accepted_forms", "encoding_help",
    "forms", "half_ulp", "parse", "register_encoding", "row_generator", "tail_log_partition",
]


"""``digits[,split=train|test]``: scikit-learn's 8x8 handwritten digits, a fixed stratified split."""

from __future__ import annotations

import functools

import numpy as np

from kdcache.data.registry import Scheme, register_scheme, split_option
from kdcache.data.source import ArraySource, DataSource


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # The 0..16 ink counts scaled to 0..255 (exact integers in, rounded out).
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    # Within each class, every fifth sample in file order is held out: fixed,
    # needs no RNG (whose streams may change between numpy versions), and
    # stratified, so both splits keep the class balance.
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    test = rank % 5 == 4
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]


def _open(spec: str, root: str | None, options: dict[str, str]) -> DataSource:
    split = split_option(options, spec)
    return ArraySource(
        spec=f"digits,split={split}",
        name="digits",
        split=split,
        classes=[str(c) for c in range(10)],
        loader=functools.partial(_load_digits, split),
    )


# 8x8 images: no preset crop fits them, so they are used as they are.
register_scheme(Scheme("digits", _open, root="none", options=("split",), default_recipe="none"))

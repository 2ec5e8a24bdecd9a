"""Rebuild data/fashion-mnist-sample.npz, the Fashion-MNIST sample kdcache ships.

Run from the repository root with the Debian package dataset-fashion-mnist
installed (or pass its folder)::

    python data/make_embedded.py [ROOT]

The pick is deterministic and needs no RNG: the first 600 images of each
class in the training file's order and the first 100 of each class in the
test file's order (6,000 + 1,000 images, class-balanced). The indices into
the original files are stored beside the images, so the sample can be
checked against the full dataset.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from kdcache.data import DEFAULT_FASHION_MNIST_ROOT, open_data

PER_CLASS = {"train": 600, "test": 100}
OUT = Path(__file__).resolve().parent / "fashion-mnist-sample.npz"


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` samples of each class, in file order."""
    picked = [np.flatnonzero(labels == c)[:per_class] for c in range(int(labels.max()) + 1)]
    if any(len(p) < per_class for p in picked):
        raise SystemExit(f"a class has fewer than {per_class} samples")
    return np.sort(np.concatenate(picked))


def main(root: str) -> None:
    arrays: dict[str, np.ndarray] = {}
    for split, per_class in PER_CLASS.items():
        source = open_data(f"fashion-mnist:{root},split={split}")
        idx = first_per_class(source.labels, per_class)
        images = np.stack([source.image(int(i))[0].numpy() for i in idx])
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = source.labels[idx].astype(np.uint8)
        arrays[f"{split}_indices"] = idx.astype(np.int32)
    np.savez_compressed(OUT, **arrays)
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes, sha256 {digest})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_FASHION_MNIST_ROOT)

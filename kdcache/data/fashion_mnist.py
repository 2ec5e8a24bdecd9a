"""``fashion-mnist[:ROOT][,split=train|test]``: Fashion-MNIST's IDX files (gzipped or not).

ROOT defaults to where the Debian package dataset-fashion-mnist installs
them; torchvision's ``FashionMNIST/raw`` layout under ROOT is found too.
"""

from __future__ import annotations

import functools
import gzip
import os

import numpy as np

from kdcache.data.registry import Scheme, register_scheme, split_option
from kdcache.data.source import ArraySource, DataSource
from kdcache.errors import DataNotFoundError

DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_IDX_DTYPE_CODE_UINT8 = 0x08


def _idx_candidates(root: str, stem: str) -> list[str]:
    # The Debian package's flat layout first, then torchvision's FashionMNIST/raw.
    # Uncompressed first: torchvision's reader parses those directly.
    dirs = [root, os.path.join(root, "FashionMNIST", "raw")]
    return [os.path.join(d, stem + ext) for d in dirs for ext in ("", ".gz")]


def _find_idx(root: str, stem: str) -> str:
    candidates = _idx_candidates(root, stem)
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise DataNotFoundError(
        f"fashion-mnist: no {stem}[.gz] in {root} or {os.path.join(root, 'FashionMNIST', 'raw')}; "
        "install the Debian package dataset-fashion-mnist or pass fashion-mnist:ROOT"
    )


def _idx_header(head: bytes, total: int, path: str, ndim: int) -> tuple[int, ...]:
    """Validate an IDX header (magic, type, dims) against the file's length ``total``."""
    if len(head) < 4 + 4 * ndim or head[0:2] != b"\0\0":
        raise DataNotFoundError(f"{path} is not an IDX file (bad magic number)")
    if head[2] != _IDX_DTYPE_CODE_UINT8 or head[3] != ndim:
        raise DataNotFoundError(
            f"{path}: expected a uint8 IDX file with {ndim} dimension(s), "
            f"got type code 0x{head[2]:02x} with {head[3]} dimension(s)"
        )
    dims = tuple(int.from_bytes(head[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    if total != expected:
        raise DataNotFoundError(f"{path}: {total} bytes but its header {dims} implies {expected}; truncated?")
    return dims


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """Read a uint8 IDX file, gzipped or not.

    Uncompressed files go through torchvision's reader; it opens a path, so a
    gzipped file is decompressed to memory and parsed here instead. Both paths
    check the header first, since torchvision validates with ``assert``.
    """
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                data = f.read()
        except (OSError, EOFError) as err:
            raise DataNotFoundError(f"{path}: cannot decompress ({err})") from None
        dims = _idx_header(data[: 4 + 4 * ndim], len(data), path, ndim)
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    from torchvision.datasets.mnist import read_image_file, read_label_file

    with open(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
    _idx_header(head, os.path.getsize(path), path, ndim)
    reader = read_image_file if ndim == 3 else read_label_file
    return reader(path).numpy()


def _load_fashion_mnist(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"), 3)
    labels = _read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"), 1)
    return images[:, None], labels.astype(np.int64)


def _open_fashion_mnist(root: str, split: str) -> DataSource:
    if not os.path.isdir(root):
        raise DataNotFoundError(
            f"fashion-mnist: folder {root} does not exist; install the Debian package "
            "dataset-fashion-mnist or pass fashion-mnist:ROOT"
        )
    return ArraySource(
        spec=f"fashion-mnist:{root},split={split}",
        name="fashion-mnist",
        split=split,
        classes=FASHION_MNIST_CLASSES,
        loader=functools.partial(_load_fashion_mnist, root, split),
    )


def _open(spec: str, root: str | None, options: dict[str, str]) -> DataSource:
    return _open_fashion_mnist(root or DEFAULT_FASHION_MNIST_ROOT, split_option(options, spec))


register_scheme(Scheme("fashion-mnist", _open, root="optional", options=("split",), default_recipe="fashion-mnist"))

"""``embedded[,split=train|test]``: the Fashion-MNIST sample shipped with kdcache (data/README.md)."""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path

import numpy as np

from kdcache.data.fashion_mnist import FASHION_MNIST_CLASSES
from kdcache.data.registry import Scheme, register_scheme, split_option
from kdcache.data.source import ArraySource, DataSource
from kdcache.errors import DataNotFoundError

# The sample lives in the source tree's data/ folder, installed as the package
# kdcache._data (pyproject.toml), so it is found from any directory, in a
# checkout, an editable install or a wheel; data/make_embedded.py rebuilds it.
# Installed packages are plain files, so the resource is a real path.
EMBEDDED_PATH = Path(str(resources.files("kdcache._data").joinpath("fashion-mnist-sample.npz")))


def _load_embedded(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise DataNotFoundError(
            f"embedded: {path} is missing; it ships with kdcache as package data (kdcache._data): "
            "reinstall kdcache, or in a checkout rebuild it with python data/make_embedded.py"
        )
    with np.load(path, allow_pickle=False) as npz:
        return npz[f"{split}_images"][:, None], npz[f"{split}_labels"].astype(np.int64)


def _open(spec: str, root: str | None, options: dict[str, str]) -> DataSource:
    split = split_option(options, spec)
    return ArraySource(
        spec=f"embedded,split={split}",
        name="embedded",
        split=split,
        classes=FASHION_MNIST_CLASSES,
        loader=functools.partial(_load_embedded, str(EMBEDDED_PATH), split),
    )


register_scheme(Scheme("embedded", _open, root="none", options=("split",), default_recipe="fashion-mnist"))

"""``cifar10:ROOT[,split=train|test]`` and ``cifar100:ROOT[,...]``: the python version of CIFAR.

Read with torchvision's CIFAR10/CIFAR100 (which checks the official MD5s).
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any

import numpy as np

from kdcache.data.registry import Scheme, register_scheme, split_option
from kdcache.data.source import ArraySource, DataSource, Preloaded
from kdcache.errors import DataNotFoundError

_ROOT_HINT = {
    "cifar10": "cifar10:ROOT, ROOT holding cifar-10-batches-py/",
    "cifar100": "cifar100:ROOT, ROOT holding cifar-100-python/",
}


def _cifar_class(scheme: str) -> Any:
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR10 if scheme == "cifar10" else CIFAR100


def _load_cifar(scheme: str, root: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    cls = _cifar_class(scheme)
    folder = os.path.join(root, cls.base_folder)
    expected = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [name for name in expected if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise DataNotFoundError(
            f"{scheme}: {folder} lacks {', '.join(missing)}; extract {cls.filename} "
            f"(the python version) into {root}"
        )
    try:
        ds = cls(root, train=split == "train", download=False)
    except RuntimeError as err:  # torchvision's "not found or corrupted" (MD5 mismatch)
        raise DataNotFoundError(
            f"{scheme}: the files in {folder} do not match the official release's MD5 ({err}); "
            f"re-extract {cls.filename}"
        ) from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
        raise DataNotFoundError(f"{scheme}: cannot read the batches in {folder}: {err!r}") from None
    images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
    return images, np.asarray(ds.targets, dtype=np.int64), list(ds.classes)


def _load_cifar_arrays(scheme: str, root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = _load_cifar(scheme, root, split)
    return images, labels


def _open_cifar(scheme: str, root: str, split: str) -> DataSource:
    if not os.path.isdir(root):
        raise DataNotFoundError(f"{scheme}: folder {root} does not exist; {_ROOT_HINT[scheme]}")
    cls = _cifar_class(scheme)
    # Accept the batches folder itself as the root, as users often point there.
    if not os.path.isdir(os.path.join(root, cls.base_folder)) and os.path.basename(root) == cls.base_folder:
        root = os.path.dirname(root)
    images, labels, classes = _load_cifar(scheme, root, split)
    return ArraySource(
        spec=f"{scheme}:{root},split={split}",
        name=scheme,
        split=split,
        classes=classes,
        loader=Preloaded(images, labels, functools.partial(_load_cifar_arrays, scheme, root, split)),
    )


def _opener(scheme: str) -> Any:
    def open_cifar(spec: str, root: str | None, options: dict[str, str]) -> DataSource:
        return _open_cifar(scheme, root or "", split_option(options, spec))

    return open_cifar


for _name in ("cifar10", "cifar100"):
    register_scheme(
        Scheme(_name, _opener(_name), root="required", options=("split",), default_recipe="cifar",
               root_hint=_ROOT_HINT[_name])
    )

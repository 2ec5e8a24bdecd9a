"""What a data source is: :class:`DataSource`, and :class:`ArraySource` for images held in one array.

A :class:`DataSource` is the fixed, indexable list of ``(image, label)`` pairs
a store is built over. It returns images as uint8 tensors ``(C, H, W)`` at
their native size; every augmentation lives in :mod:`kdcache.views`. A store
records the source's canonical spec and its content fingerprint, so a student
can be refused data that differs from what the teacher saw (see
``docs/data-and-views.md``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from kdcache.errors import DataNotFoundError

__all__ = ["ArraySource", "DataSource", "Preloaded"]

# Bump when the hashed byte layout changes, so old and new fingerprints never collide.
_FINGERPRINT_FORMAT = "kdcache-data-fingerprint-v1"


class DataSource:
    """An indexed, labelled image dataset (see ``docs/internals.md``).

    Instances are picklable and cheap to send to DataLoader workers: decoded
    pixel arrays are left out of the pickle and reloaded on first use, so a
    worker started by fork shares the parent's arrays and one started by
    spawn reloads from disk instead of receiving tens of megabytes.
    """

    spec: str
    name: str
    split: str | None
    num_classes: int
    channels: int
    labels: np.ndarray
    classes: list[str]

    def __init__(
        self,
        *,
        spec: str,
        name: str,
        split: str | None,
        classes: list[str],
        channels: int,
        labels: np.ndarray,
    ) -> None:
        self.spec = spec
        self.name = name
        self.split = split
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.channels = int(channels)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        labels.setflags(write=False)
        self.labels = labels
        self._fingerprint: str | None = None
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataNotFoundError(
                f"{spec}: labels span {labels.min()}..{labels.max()} but the dataset has "
                f"{self.num_classes} classes; the files are not a {name} dataset."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r}: {len(self)} samples, {self.num_classes} classes>"

    def image(self, i: int) -> torch.Tensor:
        """Sample ``i`` as a uint8 tensor ``(channels, H, W)`` at its native size."""
        raise NotImplementedError

    def image_size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of sample ``i`` without decoding more than needed."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """``"sha256:<hex>"`` of the contents and labels (definition in docs/data-and-views.md).

        Computed once and cached: a store compares it with the one it was
        built from, so a wrong split, root or version is refused.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            self._hash_into(digest)
            self._fingerprint = "sha256:" + digest.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for a store manifest or ``kdcache info``."""
        return {
            "spec": self.spec,
            "name": self.name,
            "split": self.split,
            "num_samples": len(self),
            "num_classes": self.num_classes,
            "channels": self.channels,
            "fingerprint": self.fingerprint(),
        }

    def _index(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {self.spec} ({len(self)} samples)")
        return i

    def _header(self, kind: str, **extra: Any) -> bytes:
        header = {
            "format": _FINGERPRINT_FORMAT,
            "kind": kind,
            "num_samples": len(self),
            "num_classes": self.num_classes,
            **extra,
        }
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    def _hash_into(self, digest: Any) -> None:
        raise NotImplementedError


class ArraySource(DataSource):
    """A source whose images are one uint8 array ``(N, C, H, W)`` in memory.

    ``loader`` is a picklable zero-argument callable returning
    ``(images, labels)``; it is called again after unpickling (see
    :class:`DataSource`).
    """

    def __init__(
        self,
        *,
        spec: str,
        name: str,
        split: str | None,
        classes: list[str],
        loader: Callable[[], tuple[np.ndarray, np.ndarray]],
    ) -> None:
        images, labels = loader()
        self._loader = loader
        self._images: np.ndarray | None = _freeze_images(images, spec)
        if len(images) != len(labels):
            raise DataNotFoundError(
                f"{spec}: {len(images)} images but {len(labels)} labels; the files do not belong together."
            )
        super().__init__(
            spec=spec, name=name, split=split, classes=classes, channels=images.shape[1], labels=labels
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = None  # reloaded on first use: see DataSource
        return state

    def _array(self) -> np.ndarray:
        if self._images is None:
            images, labels = self._loader()
            # The files could have changed since the parent opened them.
            if len(images) != len(self.labels) or not np.array_equal(labels, self.labels):
                raise DataNotFoundError(
                    f"{self.spec}: the data changed on disk after it was opened; reopen it."
                )
            self._images = _freeze_images(images, self.spec)
        return self._images

    def image(self, i: int) -> torch.Tensor:
        # A copy, so a caller writing into the tensor cannot alter the dataset.
        return torch.from_numpy(self._array()[self._index(i)].copy())

    def image_size(self, i: int) -> tuple[int, int]:
        self._index(i)
        _, _, h, w = self._array().shape
        return (h, w)

    def _hash_into(self, digest: Any) -> None:
        images = self._array()
        digest.update(self._header("array", shape=list(images.shape[1:])))
        digest.update(self.labels.astype("<i8").tobytes())
        digest.update(memoryview(images).cast("B"))


def _freeze_images(images: np.ndarray, spec: str) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataNotFoundError(f"{spec}: expected uint8 images (N, 1|3, H, W), got {images.dtype} {images.shape}")
    images = np.ascontiguousarray(images)
    images.setflags(write=False)
    return images


class Preloaded:
    """A loader that hands out arrays already read once, then reloads from disk.

    Lets open_data read CIFAR's pickles a single time (it needs the class
    names too) while keeping the pickled state small.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, reload: Callable[[], tuple[np.ndarray, np.ndarray]]
    ) -> None:
        self._arrays: tuple[np.ndarray, np.ndarray] | None = (images, labels)
        self._reload = reload

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        arrays, self._arrays = self._arrays, None
        return arrays if arrays is not None else self._reload()

    def __getstate__(self) -> dict[str, Any]:
        return {"_arrays": None, "_reload": self._reload}

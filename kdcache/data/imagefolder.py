"""``imagefolder:ROOT[,channels=1|3]``: ROOT/CLASS/IMAGE files, decoded lazily.

Classes and their order come from torchvision's ImageFolder; images are
decoded with ``torchvision.io.decode_image`` when a view needs them.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcache.data.registry import Scheme, register_scheme
from kdcache.data.source import DataSource
from kdcache.errors import DataNotFoundError, SpecError

# Extensions torchvision.io.decode_image reads. ImageFolder's default list also
# holds .bmp/.ppm/.tif, which decode_image cannot read: those are skipped.
_DECODABLE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")

_ROOT_HINT = "imagefolder:ROOT, ROOT holding one sub-folder of images per class"


class FolderSource(DataSource):
    """An ``ImageFolder`` tree, decoded lazily with ``torchvision.io.decode_image``."""

    def __init__(
        self,
        *,
        spec: str,
        root: str,
        classes: list[str],
        relpaths: list[str],
        labels: np.ndarray,
        channels: int,
    ) -> None:
        self.root = root
        self.relpaths = relpaths
        super().__init__(
            spec=spec, name="imagefolder", split=None, classes=classes, channels=channels, labels=labels
        )

    def _path(self, i: int) -> str:
        return os.path.join(self.root, self.relpaths[self._index(i)])

    def image(self, i: int) -> torch.Tensor:
        return _decode(self._path(i), self.channels)

    def image_size(self, i: int) -> tuple[int, int]:
        from PIL import Image

        # PIL parses the header only, which is much cheaper than decoding.
        with Image.open(self._path(i)) as im:
            return (im.height, im.width)

    def _hash_into(self, digest: Any) -> None:
        digest.update(self._header("files", channels=self.channels))
        for rel, label in zip(self.relpaths, self.labels.tolist()):
            path = os.path.join(self.root, rel)
            name = os.fsencode(Path(rel).as_posix())  # raw bytes: any file name hashes
            digest.update(len(name).to_bytes(8, "little") + name + int(label).to_bytes(8, "little"))
            digest.update(os.path.getsize(path).to_bytes(8, "little"))
            with open(path, "rb") as f:
                for block in iter(functools.partial(f.read, 1 << 20), b""):
                    digest.update(block)


def _decodable(path: str) -> bool:
    return path.lower().endswith(_DECODABLE_EXTENSIONS)


def _decode(path: str, channels: int) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        image = decode_image(read_file(path), mode=mode)
    except RuntimeError as err:
        raise DataNotFoundError(f"cannot decode image {path}: {err}") from None
    if image.ndim == 4:  # an animated GIF: its first frame
        image = image[0]
    return image


def _open_imagefolder(root: str, channels: int | None) -> DataSource:
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(root):
        raise DataNotFoundError(f"imagefolder: folder {root} does not exist; {_ROOT_HINT}")
    try:
        folder = ImageFolder(root, is_valid_file=_decodable)
    except FileNotFoundError as err:
        raise DataNotFoundError(
            f"imagefolder: {root} holds no usable images ({err}); expected ROOT/CLASS/IMAGE with "
            f"extensions {', '.join(_DECODABLE_EXTENSIONS)}"
        ) from None
    relpaths = [os.path.relpath(path, root) for path, _ in folder.samples]
    labels = np.asarray([label for _, label in folder.samples], dtype=np.int64)
    if channels is None:
        # Decided once from the first image so every sample has the same channel
        # count; the canonical spec records it so a replay never re-guesses.
        from torchvision.io import ImageReadMode, decode_image, read_file

        first = decode_image(read_file(folder.samples[0][0]), mode=ImageReadMode.UNCHANGED)
        channels = 1 if first.shape[-3] in (1, 2) else 3
    return FolderSource(
        spec=f"imagefolder:{root},channels={channels}",
        root=root,
        classes=list(folder.classes),
        relpaths=relpaths,
        labels=labels,
        channels=channels,
    )


def _open(spec: str, root: str | None, options: dict[str, str]) -> DataSource:
    channels = options.get("channels")
    if channels is not None and channels not in ("1", "3"):
        raise SpecError(f"channels={channels!r} in {spec!r}; expected channels=1 or channels=3")
    return _open_imagefolder(root or "", int(channels) if channels else None)


register_scheme(
    Scheme("imagefolder", _open, root="required", options=("channels",), default_recipe="imagenet",
           root_hint=_ROOT_HINT)
)

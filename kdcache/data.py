"""Data sources named by spec strings: ``open_data(spec) -> DataSource``.

A :class:`DataSource` is the fixed, indexable list of ``(image, label)`` pairs
a store is built over. It returns images as uint8 tensors ``(C, H, W)`` at
their native size; every augmentation lives in :mod:`kdcache.views`. A store
records the source's canonical spec and its content fingerprint, so a student
can be refused data that differs from what the teacher saw (see
``docs/data-and-views.md``).

Specs (``docs/internals.md``)::

    fashion-mnist[:ROOT][,split=train|test]
    cifar10:ROOT[,split=train|test]      cifar100:ROOT[,split=train|test]
    imagefolder:ROOT[,channels=1|3]
    digits[,split=train|test]
    embedded[,split=train|test]
    synthetic:samples=N,classes=C,size=S,channels=K,seed=R[,split=train|test]
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcache.errors import DataNotFoundError, SpecError

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "EMBEDDED_PATH",
    "FASHION_MNIST_CLASSES",
    "DataSource",
    "open_data",
]

DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

# The sample ships in the source tree's data/ folder, beside the package (an
# editable install or a checkout); data/make_embedded.py rebuilds it.
EMBEDDED_PATH = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist-sample.npz"

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_SPLITS = ("train", "test")

# Extensions torchvision.io.decode_image reads. ImageFolder's default list also
# holds .bmp/.ppm/.tif, which decode_image cannot read: those are skipped.
_DECODABLE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")

# Bump when the hashed byte layout changes, so old and new fingerprints never collide.
_FINGERPRINT_FORMAT = "kdcache-data-fingerprint-v1"

# Refuse synthetic sets that would not fit in memory rather than failing mid-way.
_SYNTHETIC_MAX_BYTES = 2 << 30


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


# --------------------------------------------------------------------------- spec parsing

_OPTION = re.compile(r"^([a-z_]+)=(.*)$")

# scheme -> (root: "required" | "optional" | "none", allowed options)
_SCHEMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fashion-mnist": ("optional", ("split",)),
    "cifar10": ("required", ("split",)),
    "cifar100": ("required", ("split",)),
    "imagefolder": ("required", ("channels",)),
    "digits": ("none", ("split",)),
    "embedded": ("none", ("split",)),
    "synthetic": ("none", ("samples", "classes", "size", "channels", "seed", "split")),
}

_ROOT_HINT = {
    "cifar10": "cifar10:ROOT, ROOT holding cifar-10-batches-py/",
    "cifar100": "cifar100:ROOT, ROOT holding cifar-100-python/",
    "imagefolder": "imagefolder:ROOT, ROOT holding one sub-folder of images per class",
}


def _parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """Split ``scheme[:root][,key=value...]`` into its parts, checking names."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty data spec; expected one of: {', '.join(_SCHEMES)}")
    text = spec.strip()
    m = re.match(r"^([A-Za-z0-9_-]+)(.*)$", text, re.DOTALL)
    scheme, rest = (m[1], m[2]) if m else ("", text)
    if scheme not in _SCHEMES:
        raise SpecError(f"unknown data scheme {scheme!r} in {spec!r}; known: {', '.join(_SCHEMES)}")
    root_rule, allowed = _SCHEMES[scheme]
    if rest and rest[0] not in ":,":
        raise SpecError(f"malformed data spec {spec!r}: expected ':' or ',' after {scheme!r}")
    tokens = rest[1:].split(",") if rest else []
    root_tokens: list[str] = []
    options: dict[str, str] = {}
    for token in tokens:
        opt = _OPTION.match(token)
        # A root comes first; a path may hold commas as long as no part of it
        # looks like key=value (write ./key=value for such a folder).
        if opt is None and not options and rest.startswith(":"):
            root_tokens.append(token)
            continue
        if opt is None:
            raise SpecError(f"malformed option {token!r} in {spec!r}; expected key=value")
        key, value = opt[1], opt[2]
        if key not in allowed:
            raise SpecError(
                f"unknown option {key!r} for {scheme} in {spec!r}; allowed: {', '.join(allowed)}"
            )
        if key in options:
            raise SpecError(f"option {key!r} given twice in {spec!r}")
        options[key] = value
    root = ",".join(root_tokens) if root_tokens else None
    if root is not None and not root.strip():
        root = None
    if root_rule == "none" and root is not None:
        raise SpecError(f"{scheme} takes no root folder, got {root!r} in {spec!r}")
    if root_rule == "required" and root is None:
        raise SpecError(f"{scheme} needs a root folder: {_ROOT_HINT[scheme]}")
    return scheme, root, options


def _split_option(options: dict[str, str], spec: str) -> str:
    split = options.get("split", "train")
    if split not in _SPLITS:
        raise SpecError(f"split={split!r} in {spec!r}; expected split=train or split=test")
    return split


def _int_option(options: dict[str, str], key: str, default: int, lo: int, hi: int, spec: str) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise SpecError(f"{key}={raw!r} in {spec!r} is not an integer") from None
    if not lo <= value <= hi:
        raise SpecError(f"{key}={value} in {spec!r} is out of range; expected {lo}..{hi}")
    return value


def _abs_root(root: str) -> str:
    return os.path.abspath(os.path.expanduser(root))


def open_data(spec: str) -> DataSource:
    """Open the dataset named by ``spec`` (format in the module docstring).

    Raises :class:`SpecError` for a malformed spec and
    :class:`DataNotFoundError` when the files are missing or empty, each with
    one line saying what was expected where.
    """
    scheme, root, options = _parse_spec(spec)
    if scheme == "fashion-mnist":
        return _open_fashion_mnist(_abs_root(root or DEFAULT_FASHION_MNIST_ROOT), _split_option(options, spec))
    if scheme in ("cifar10", "cifar100"):
        return _open_cifar(scheme, _abs_root(root or ""), _split_option(options, spec))
    if scheme == "imagefolder":
        channels = options.get("channels")
        if channels is not None and channels not in ("1", "3"):
            raise SpecError(f"channels={channels!r} in {spec!r}; expected channels=1 or channels=3")
        return _open_imagefolder(_abs_root(root or ""), int(channels) if channels else None)
    if scheme == "digits":
        split = _split_option(options, spec)
        return ArraySource(
            spec=f"digits,split={split}",
            name="digits",
            split=split,
            classes=[str(c) for c in range(10)],
            loader=functools.partial(_load_digits, split),
        )
    if scheme == "embedded":
        split = _split_option(options, spec)
        canonical = f"embedded,split={split}"
        return ArraySource(
            spec=canonical,
            name="embedded",
            split=split,
            classes=FASHION_MNIST_CLASSES,
            loader=functools.partial(_load_embedded, str(EMBEDDED_PATH), split),
        )
    # synthetic
    samples = _int_option(options, "samples", 1000, 1, 10_000_000, spec)
    classes = _int_option(options, "classes", 10, 1, 100_000, spec)
    size = _int_option(options, "size", 32, 1, 4096, spec)
    channels = _int_option(options, "channels", 3, 1, 3, spec)
    seed = _int_option(options, "seed", 0, 0, 2**63 - 1, spec)
    split = _split_option(options, spec)
    if channels == 2:
        raise SpecError(f"channels=2 in {spec!r}; expected channels=1 or channels=3")
    if samples * size * size * channels > _SYNTHETIC_MAX_BYTES:
        raise SpecError(f"{spec!r} asks for more than 2 GiB of images; lower samples or size")
    canonical = (
        f"synthetic:samples={samples},classes={classes},size={size},"
        f"channels={channels},seed={seed},split={split}"
    )
    return ArraySource(
        spec=canonical,
        name="synthetic",
        split=split,
        classes=[str(c) for c in range(classes)],
        loader=functools.partial(_make_synthetic, samples, classes, size, channels, seed, split),
    )


def _freeze_images(images: np.ndarray, spec: str) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataNotFoundError(f"{spec}: expected uint8 images (N, 1|3, H, W), got {images.dtype} {images.shape}")
    images = np.ascontiguousarray(images)
    images.setflags(write=False)
    return images


# --------------------------------------------------------------------------- Fashion-MNIST (IDX)

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


# --------------------------------------------------------------------------- CIFAR


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
        loader=_Preloaded(images, labels, functools.partial(_load_cifar_arrays, scheme, root, split)),
    )


class _Preloaded:
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


# --------------------------------------------------------------------------- ImageFolder


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
        raise DataNotFoundError(f"imagefolder: folder {root} does not exist; {_ROOT_HINT['imagefolder']}")
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


# --------------------------------------------------------------------------- digits, embedded, synthetic


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


def _load_embedded(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise DataNotFoundError(
            f"embedded: {path} is missing; it ships in kdcache's source tree "
            "(rebuild it with python data/make_embedded.py)"
        )
    with np.load(path, allow_pickle=False) as npz:
        return npz[f"{split}_images"][:, None], npz[f"{split}_labels"].astype(np.int64)


def _make_synthetic(
    samples: int, classes: int, size: int, channels: int, seed: int, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent images: a smooth per-class template plus per-sample noise.

    The templates come from ``SeedSequence([seed, 0])`` and are shared by both
    splits; the samples of each split come from their own stream, so train and
    test hold different images of the same classes.
    """
    template_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0])))
    coarse = template_rng.random((classes, channels, 4, 4), dtype=np.float32)
    templates = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=False
    ).numpy()
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1 if split == "train" else 2])))
    labels = (np.arange(samples) % classes)[rng.permutation(samples)].astype(np.int64)
    images = np.empty((samples, channels, size, size), dtype=np.uint8)
    chunk = max(1, (1 << 22) // (channels * size * size))  # bounds the float32 scratch memory
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        n = stop - start
        shift = rng.standard_normal((n, 1, 1, 1), dtype=np.float32) * 0.05
        noise = rng.standard_normal((n, channels, size, size), dtype=np.float32) * 0.08
        x = 0.2 + 0.6 * templates[labels[start:stop]] + shift + noise
        images[start:stop] = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return images, labels

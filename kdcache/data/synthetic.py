"""``synthetic:samples=N,classes=C,size=S,channels=K,seed=R[,split=train|test]``: generated class images.

Needs no files: for tests, benchmarks and trying kdcache out.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from kdcache.data.registry import Scheme, int_option, register_scheme, split_option
from kdcache.data.source import ArraySource, DataSource
from kdcache.errors import SpecError

# Refuse synthetic sets that would not fit in memory rather than failing mid-way.
_SYNTHETIC_MAX_BYTES = 2 << 30


def _open(spec: str, root: str | None, options: dict[str, str]) -> DataSource:
    samples = int_option(options, "samples", 1000, 1, 10_000_000, spec)
    classes = int_option(options, "classes", 10, 1, 100_000, spec)
    size = int_option(options, "size", 32, 1, 4096, spec)
    channels = int_option(options, "channels", 3, 1, 3, spec)
    seed = int_option(options, "seed", 0, 0, 2**63 - 1, spec)
    split = split_option(options, spec)
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


# Any size and channel count: only the recipe without crops fits them all.
register_scheme(
    Scheme("synthetic", _open, root="none", options=("samples", "classes", "size", "channels", "seed", "split"),
           default_recipe="none")
)

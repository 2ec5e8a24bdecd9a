"""Data sources named by spec strings: ``open_data(spec) -> DataSource``.

A :class:`DataSource` is the fixed, indexable list of ``(image, label)`` pairs
a store is built over. It returns images as uint8 tensors ``(C, H, W)`` at
their native size; every augmentation lives in :mod:`kdcache.views`. A store
records the source's canonical spec and its content fingerprint, so a student
can be refused data that differs from what the teacher saw (see
``docs/data-and-views.md``).

Specs (``docs/data-and-views.md``, "Data specs")::

    fashion-mnist[:ROOT][,split=train|test]
    cifar10:ROOT[,split=train|test]      cifar100:ROOT[,split=train|test]
    imagefolder:ROOT[,channels=1|3]
    digits[,split=train|test]
    embedded[,split=train|test]
    synthetic:samples=N,classes=C,size=S,channels=K,seed=R[,split=train|test]

Where things live: ``source`` (DataSource, ArraySource), ``registry`` (spec
parsing, :func:`register_scheme`, :func:`open_data`), and one module per
scheme. Adding a scheme is one module that calls :func:`register_scheme`,
imported below.
"""

from __future__ import annotations

from kdcache.data.registry import Scheme, get_scheme, list_schemes, open_data, register_scheme
from kdcache.data.source import ArraySource, DataSource

# The schemes, in the order errors list them; importing one registers it.
from kdcache.data import fashion_mnist, cifar, imagefolder, digits, embedded, synthetic  # noqa: E402, I001  isort: skip
from kdcache.data.embedded import EMBEDDED_PATH
from kdcache.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FASHION_MNIST_CLASSES

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "EMBEDDED_PATH",
    "FASHION_MNIST_CLASSES",
    "ArraySource",
    "DataSource",
    "Scheme",
    "get_scheme",
    "list_schemes",
    "open_data",
    "register_scheme",
]

"""kdcache: run a teacher once, cache its logits, distill many students.

See README.md and docs/ for the user guide, ../docs/store-format.md for the
store layout other teams read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

    from kdcache.api import CachedStore
    from kdcache.data import DataSource

__version__ = "0.1.0"

from kdcache.errors import KdcacheError  # noqa: E402


def open_store(path_or_url: str | os.PathLike[str], data: str | DataSource | None = None, *,
               teacher_name: str | None = None, storage_options: Mapping[str, str] | None = None) -> CachedStore:
    """Open a store for your own training loop: :func:`kdcache.api.open_store` (see ``docs/api.md``).

    Imported on first use, so ``import kdcache`` stays free of torch for tools that only need the version.
    """
    from kdcache.api import open_store as _open

    return _open(path_or_url, data, teacher_name=teacher_name, storage_options=storage_options)


def __getattr__(name: str) -> object:
    # ``kdcache.losses`` (the loss registry) and ``kdcache.api`` load lazily, on first attribute access.
    if name in ("losses", "api"):
        import importlib

        return importlib.import_module(f"kdcache.{name}")
    raise AttributeError(f"module 'kdcache' has no attribute {name!r}")


__all__ = ["KdcacheError", "__version__", "api", "losses", "open_store"]

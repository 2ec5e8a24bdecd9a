"""Stage 2: train students from a store (or from a teacher run live).

- :mod:`kdcache.distill.run`: ``kdcache distill`` (one student; its run directory is the engine's);
- :mod:`kdcache.distill.logit_sources`: where a step's teacher logits come from (the store, or online);
- :mod:`kdcache.distill.cached_rows`: which cached (view, sample) rows an epoch reads, and reading them;
- :mod:`kdcache.distill.prefetch`: reads kept in flight ahead of the step;
- :mod:`kdcache.distill.sweep` and :mod:`kdcache.distill.sweep_records`: ``kdcache sweep``, many students in
  one pass over the store.

The Python API over the same pieces is :mod:`kdcache.api`.
"""

from typing import Any

__all__ = ['DistillConfig', 'DistillResult', 'distill']


def __getattr__(name: str) -> Any:
    # Re-exported lazily: the engine imports kdcache.distill.prefetch, and an eager import of
    # kdcache.distill.run here would import the engine back while it is initialising.
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("kdcache.distill.run"), name)
    raise AttributeError(f"module 'kdcache.distill' has no attribute {name!r}")

"""Stage 1: run a teacher once over the store's views and write its logits.

- :mod:`kdcache.precompute.run`: ``kdcache precompute`` (views, the teacher's micro-batches, resume, torchrun);
- :mod:`kdcache.precompute.scoring`: how a teacher is built and scores (shared with ``verify --replay``);
- :mod:`kdcache.precompute.convert`: ``kdcache convert``, a teacher re-encoded without running it.

Each writes its teacher entry through :class:`kdcache.store.teacher_writer.TeacherWriter`.
"""

from typing import Any

__all__ = ['PrecomputeResult', 'TeacherRequest', 'precompute']


def __getattr__(name: str) -> Any:
    # Re-exported lazily, as kdcache.distill's are: importing one submodule of the stage (verify imports
    # kdcache.precompute.scoring) does not import the whole command and its dependencies.
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("kdcache.precompute.run"), name)
    raise AttributeError(f"module 'kdcache.precompute' has no attribute {name!r}")

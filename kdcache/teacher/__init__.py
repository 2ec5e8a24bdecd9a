"""Stage 0: ``kdcache train-teacher``, training a teacher with the engine the students use.

- :mod:`kdcache.teacher.train`: the command (its run lies beside its checkpoint).
"""

from typing import Any

__all__ = ['TeacherConfig', 'TeacherResult', 'train_teacher']


def __getattr__(name: str) -> Any:
    # Re-exported lazily: the engine imports this stage's submodules, and an eager import of
    # :mod:`kdcache.teacher.train` here would import the engine back while it is initialising.
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("kdcache.teacher.train"), name)
    raise AttributeError(f"module 'kdcache.teacher' has no attribute {name!r}")

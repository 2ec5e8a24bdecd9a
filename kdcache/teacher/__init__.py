"""Stage 0: ``kdcache train-teacher``, training a teacher with the engine the students use.

- :mod:`kdcache.teacher.train`: the command (its run lies beside its checkpoint).
"""

from typing import Any

__all__ = ['TeacherConfig', 'TeacherResult', 'train_teacher']


def __getattr__(name: str) -> Any:
    # Re-exported lazily, as kdcache.distill's are: importing one submodule of the stage (verify imports
    # kdcache.precompute.scoring) does not import the whole command and its dependencies.
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("kdcache.teacher.train"), name)
    raise AttributeError(f"module 'kdcache.teacher' has no attribute {name!r}")

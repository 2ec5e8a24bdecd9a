"""Errors a user can hit. Each one says what is wrong and how to fix it.

The hierarchy subclasses the matching built-in too (as zarr's does), so code
that catches ``ValueError`` or ``FileNotFoundError`` keeps working, while the
CLI can catch :class:`KdcacheError` alone and print one clean line.

Exit codes of the CLI: 0 ok, 1 a :class:`KdcacheError` (one line), 2 a usage
error (a malformed command line, or :class:`UsageError` raised by the library
for an option value it refuses), 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import warnings


class KdcacheError(Exception):
    """Base class of every error kdcache raises on purpose."""


class UsageError(KdcacheError, ValueError):
    """An option value is invalid (or does not apply to the chosen mode): the CLI exits 2."""


class SpecError(KdcacheError, ValueError):
    """A spec string (dataset, model, recipe, loss option) is malformed or unknown."""


class DataNotFoundError(KdcacheError, FileNotFoundError):
    """A dataset root or file does not exist or holds no data."""


class RecipeError(KdcacheError, ValueError):
    """An augmentation recipe is invalid."""


class ModelError(KdcacheError, ValueError):
    """A model cannot be built or its weights do not fit it."""


class ModelInputError(UsageError, ModelError):
    """A model cannot take the data's images (their channels or size): the CLI exits 2, before anything runs."""


class StoreError(KdcacheError, ValueError):
    """A store is missing, malformed, or cannot be used as asked."""


class TeacherNameError(UsageError, StoreError):
    """A store holds no teacher of the name given, or holds several and none was named: a usage error (exit 2)."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No kdcache store exists at the given path."""


class StoreMismatchError(StoreError):
    """A store does not match the data, teacher or arguments it is used with."""


class StoreBusyError(StoreError):
    """Another process holds the store's writer lock."""


class StoreIncompleteError(StoreError):
    """The store (or one teacher in it) is still being written."""


class StoreCorruptError(StoreError):
    """A chunk of a store does not match its checksum record."""


class NonFiniteLogitsError(KdcacheError, ValueError):
    """A teacher produced NaN or Inf logits."""


class LossConfigError(UsageError):
    """A loss name, hyper-parameter or option is invalid: a usage error (the CLI exits 2)."""


class RunError(KdcacheError, ValueError):
    """A training run directory cannot be created or resumed as asked."""


class RunBusyError(RunError):
    """Another process holds a run directory's writer lock (exit 1, as :class:`StoreBusyError`)."""


class KdcacheBug(RuntimeError):
    """An internal invariant broke: a bug in kdcache, not a user error.

    Deliberately *not* a :class:`KdcacheError`: the CLI lets it keep its
    traceback, so a report carries where it happened.
    """


class KdcacheWarning(UserWarning):
    """Base class of the warnings kdcache emits (filter them with ``warnings.filterwarnings``)."""


class ApproximateEncodingWarning(KdcacheWarning):
    """Rows of a compact encoding are served in a way that is not exact (decoded at another temperature)."""


class StoreRepairWarning(KdcacheWarning):
    """A writer found chunks that no longer matched their checksum records and rewrote them."""


def warn(message: str, category: type[KdcacheWarning] = KdcacheWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first caller outside the kdcache package.

    A fixed ``stacklevel`` names a kdcache module whenever the warning is raised a few calls deep
    (``CachedStore.batches`` -> ``for_loss`` -> here); the user's own line is what ``-W`` filters
    and the once-per-location rule should key on.
    """
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)

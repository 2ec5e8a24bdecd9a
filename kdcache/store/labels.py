"""The store's labels: their record (format 2), the checks every reader makes, and their repair.

Labels are what statistics, a teacher's accuracy and every mixed target are computed against, so a label
changed or lost after precompute must fail a read, not give wrong numbers: format 2 records their checksum
in the manifest; format 1 stores have no record and are checked for range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kdcache.errors import StoreCorruptError
from kdcache.store import layout
from kdcache.store.chunks import chunk_missing, labels_record

if TYPE_CHECKING:
    from kdcache.store.store import Store


def problem(store: Store, labels: np.ndarray) -> str | None:
    """What is wrong with ``labels`` as read from this store, or None."""
    arr = store._array(layout.LABELS)
    record = store.dataset.labels_checksum
    if record is not None and labels_record(labels) == record:
        return None
    chunk = int(arr.chunks[0])
    for k in range(-(-len(labels) // chunk)):
        if chunk_missing(arr, (k,)):
            stop = min(len(labels), (k + 1) * chunk)
            return f"{layout.LABELS} chunk {k} (samples {k * chunk}-{stop - 1}) is missing"
    if record is not None:
        return f"{layout.LABELS} do not match their checksum record (changed after precompute)"
    bad = labels[(labels < 0) | (labels >= store.dataset.num_classes)]
    if bad.size:
        return (f"{layout.LABELS} hold {int(bad[0])}, not a class id in [0, {store.dataset.num_classes})")
    return None


def rewrite(store: Store, labels: np.ndarray) -> bool:
    """Rewrite damaged labels from the dataset's (``labels``); True if they were damaged.

    Format 2 writes them only when they hash to the record (taken from the labels the logits were
    scored with); format 1 has no record, so labels that differ from the dataset's are rewritten
    (the caller has already compared the dataset's fingerprint with the store's).
    """
    labels = np.asarray(labels, dtype=np.int64)
    stored = store.labels(verify=False)
    record = store.dataset.labels_checksum
    if (labels_record(stored) == record) if record is not None else np.array_equal(stored, labels):
        return False
    store._require_writable()
    if record is not None and labels_record(labels) != record:
        raise StoreCorruptError(f"{store.path}: the dataset's labels do not hash to the store's labels record, "
                                "so the damaged labels cannot be rewritten; precompute the store again into a "
                                "new path")
    store._array(layout.LABELS)[:] = labels
    return True


"""The logit store (``docs/store-format.md``): the only package that knows its layout.

* :mod:`~kdcache.store.layout`: node paths and attribute names;
* :mod:`~kdcache.store.manifest`: the manifest, dataset record, views record
  and teacher card as frozen dataclasses, with identity comparisons;
* :mod:`~kdcache.store.store`: :class:`Store`, typed and checksum-verified
  access to every node, and its writes;
* :mod:`~kdcache.store.stat_io`: statistic arrays, replaced atomically;
* :mod:`~kdcache.store.writing`: writer lock, durable metadata, chunk writer;
* :mod:`~kdcache.store.chunks`: chunk grid, checksums, platform record.
"""

from kdcache.store.chunks import (
    BITWISE_KEYS,
    CODECS,
    ENCODINGS,
    TARGET_CHUNK_BYTES,
    ChunkGrid,
    checksum,
    default_chunk_rows,
    dir_size,
    library_versions,
    platform_differences,
    platform_record,
    utc_now,
)
from kdcache.store.layout import FORMAT_NAME, FORMAT_VERSION, LOCK_NAME, MANIFEST_KEY
from kdcache.store.manifest import DatasetRecord, Manifest, TeacherCard, ViewsRecord, differences
from kdcache.store.store import Store, probe
from kdcache.store.writing import ChunkWriter, WriterLock, sync_tree


__all__ = [
    "BITWISE_KEYS", "CODECS", "ENCODINGS", "FORMAT_NAME", "FORMAT_VERSION", "LOCK_NAME", "MANIFEST_KEY", "TARGET_CHUNK_BYTES",
    "ChunkGrid", "ChunkWriter", "DatasetRecord", "Manifest", "Store", "TeacherCard", "ViewsRecord", "WriterLock",
    "checksum", "default_chunk_rows", "differences", "dir_size", "library_versions", "platform_differences",
    "platform_record", "probe", "sync_tree", "utc_now",
]

"""The logit store (``docs/store-format.md``): the only package that knows its layout.

* :mod:`~kdcache.store.layout`: node paths and attribute names;
* :mod:`~kdcache.store.manifest`: the manifest, dataset record, views record
  and teacher card as frozen dataclasses, with identity comparisons;
* :mod:`~kdcache.store.store`: :class:`Store`, typed and checksum-verified
  access to every node, and its writes;
* :mod:`~kdcache.store.stat_io`: statistic arrays, replaced atomically;
* :mod:`~kdcache.store.location`: where a store lives (a directory or an object-store URL);
* :mod:`~kdcache.store.backend`: a store's I/O behind one interface (:class:`LocalBackend`,
  :class:`ObjectBackend`): locking or leasing, atomic replace, listing, fsync, error mapping;
* :mod:`~kdcache.store.lease`: the writer lease on an object store;
* :mod:`~kdcache.store.writing`: writer lock, durable metadata, chunk writer;
* :mod:`~kdcache.store.chunks`: chunk grid, checksums, platform record.
"""

from kdcache.store.backend import Backend, LocalBackend, ObjectBackend
from kdcache.store.chunks import (
    BITWISE_KEYS,
    CODECS,
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
from kdcache.store.location import Location, locate, parse_storage_options, probe, store_target
from kdcache.store.store import Store
from kdcache.store.writing import ChunkWriter, WriterLock, sync_tree, writer_lock


__all__ = [
    "BITWISE_KEYS", "CODECS", "FORMAT_NAME", "FORMAT_VERSION", "LOCK_NAME", "MANIFEST_KEY", "TARGET_CHUNK_BYTES",
    "Backend", "ChunkGrid", "ChunkWriter", "DatasetRecord", "LocalBackend", "Location", "ObjectBackend", "Manifest", "Store", "TeacherCard", "ViewsRecord",
    "WriterLock", "checksum", "default_chunk_rows", "differences", "dir_size", "library_versions", "locate",
    "parse_storage_options", "platform_differences", "platform_record", "probe", "store_target", "sync_tree",
    "utc_now", "writer_lock",
]

"""Where a store lives: a local directory, or a prefix in an object store (S3, GCS, Azure, memory).

Every command that takes a store takes a :class:`Location`: a plain path or
``file://`` URL is a local directory (zarr's ``LocalStore``, ``flock``,
fsync, rename into place); ``s3://``, ``gs://``, ``az://`` and ``memory://``
URLs are opened through zarr's own :class:`zarr.storage.ObjectStore` over
``obstore``.

Why obstore and not fsspec: zarr reaches object stores through either
``FsspecStore`` (s3fs/gcsfs/adlfs) or ``ObjectStore`` (obstore, Rust). In the
distill access pattern (verified whole chunks, gathered and decoded) from a
local S3 server, ObjectStore delivered 1.2x (one view per epoch, steady state)
to 3x (a random view per sample, or a first epoch) the rows per second of
FsspecStore on the same bytes (``benchmarks/bench_remote.py``,
``docs/performance.md``), and obstore gives the conditional writes
(create-if-absent, update-if-etag) the writer lease needs on S3, GCS, Azure and
memory alike, with one library.

Credentials and endpoints come from each service's standard environment
variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``GOOGLE_SERVICE_ACCOUNT``, ``AZURE_STORAGE_ACCOUNT_NAME``, ...,
read by obstore itself) and from ``--storage-option key=value``, which wins.
What differs from a local directory, and how the store keeps its guarantees:

* an object PUT is atomic (a reader sees the old or the new object), so no
  temporary file and rename are needed, and there is nothing to fsync;
* there is no ``flock``: a writer holds a lease object instead
  (:mod:`kdcache.store.lease`);
* listings are never used to infer progress (the checksum records are); they
  only size a store for ``kdcache info`` and find leftovers to delete.

A Location only parses: its I/O (locking, atomic replace, listing, fsync,
error mapping) is its :attr:`Location.backend`, a
:class:`~kdcache.store.backend.LocalBackend` or
:class:`~kdcache.store.backend.ObjectBackend` (:mod:`kdcache.store.backend`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdcache.errors import StoreError, UsageError

if TYPE_CHECKING:
    from kdcache.store.backend import Backend, ObjectBackend

REMOTE_SCHEMES = ("s3", "gs", "az", "memory")
SCHEMES = ("file", *REMOTE_SCHEMES)
# obstore splits its settings: these are HTTP client options, everything else is the service's config
# (endpoint, region, access_key_id, ...; obstore refuses a key it does not know).
_CLIENT_OPTIONS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "timeout", "proxy_url", "user_agent",
    "pool_idle_timeout", "pool_max_idle_per_host", "http1_only", "http2_only", "default_content_type",
})
# kdcache's own storage options (not passed to obstore): how long a writer lease lasts unrenewed.
LEASE_OPTION = "lease_seconds"
# Fail within seconds on an unreachable endpoint instead of obstore's default of retrying for minutes;
# transient errors (a 503, a reset connection) are still retried.
_RETRY = {"max_retries": 3, "retry_timeout": _dt.timedelta(seconds=15),
          "backoff": {"init_backoff": _dt.timedelta(milliseconds=100), "max_backoff": _dt.timedelta(seconds=2),
                      "base": 2.0}}
# Storage options the command line gave (``--storage-option``), for every remote URL this process opens:
# a URL kept as a string (a run's records, a sweep's configuration) then opens with them, and credentials
# passed this way are never written into a record. Explicit options to :func:`locate` win.
_COMMAND_OPTIONS: dict[str, str] = {}
# memory:// stores live as long as the process; one per URL, shared by every open of that URL.
_MEMORY: dict[str, Any] = {}
_MEMORY_LOCK = threading.Lock()


def parse_storage_options(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` (repeated ``--storage-option``) as a dict; a malformed item is a UsageError."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--storage-option {item!r} must look like key=value, e.g. endpoint=http://host:9000")
        out[key.strip()] = val
    return out


@dataclass(frozen=True)
class Location:
    """A store's place: ``local`` (a directory) or ``url`` in an object store, with its storage options."""

    url: str
    local: Path | None = None
    options: tuple[tuple[str, str], ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __str__(self) -> str:
        return str(self.local) if self.local is not None else self.url

    @property
    def remote(self) -> bool:
        return self.local is None

    @property
    def lease_seconds(self) -> float:
        """How long a writer's lease lasts unrenewed (``--storage-option lease_seconds=N``, default 60)."""
        from kdcache.store.lease import DEFAULT_TTL

        raw = dict(self.options).get(LEASE_OPTION)
        if raw is None:
            return DEFAULT_TTL
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not (value > 0 and math.isfinite(value)):  # a lease that never expires could never be taken over
            raise UsageError(f"--storage-option {LEASE_OPTION}={raw} must be a positive number of seconds")
        return value

    @property
    def scheme(self) -> str:
        return "file" if self.local is not None else self.url.split("://", 1)[0]

    @property
    def backend(self) -> Backend:
        """The :class:`~kdcache.store.backend.Backend` doing this location's I/O (made once per Location):
        the one place that tells a local directory from an object store."""
        if "backend" not in self._cache:
            from kdcache.store.backend import LocalBackend, ObjectBackend

            self._cache["backend"] = LocalBackend(self) if self.local is not None else ObjectBackend(self)
        return self._cache["backend"]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ delegated to the backend
    def zarr_store(self, read_only: bool) -> Any:
        """What ``zarr.open_group`` takes: the directory, or zarr's ObjectStore over obstore."""
        return self.backend.zarr_store(read_only)

    def objects(self) -> Any:
        """The obstore store of a remote location (made once per Location)."""
        return self._object_backend().objects()

    def read(self, key: str) -> tuple[bytes, str | None] | None:
        """Object ``key`` under a remote location and its etag, or None when there is none."""
        return self._object_backend().read_tagged(key)

    def names(self) -> set[str]:
        """The top-level names under the location (objects and prefixes); used only to classify it."""
        return self.backend.list()

    def size(self, prefix: str = "") -> int:
        """Bytes under ``prefix`` (a listing: for ``kdcache info``, never for progress)."""
        return self.backend.size(prefix)

    def remove(self, prefix: str) -> None:
        """Delete everything under ``prefix/`` (a statistic generation no card lists any more)."""
        self.backend.remove(prefix)

    def unreachable(self, exc: BaseException) -> BaseException:
        """An I/O error of this location as the line a user reads (:meth:`Backend.map_error`)."""
        return self.backend.map_error(exc, "")

    def _object_backend(self) -> ObjectBackend:
        from kdcache.store.backend import ObjectBackend

        backend = self.backend
        if not isinstance(backend, ObjectBackend):
            raise StoreError(f"{self} is a local directory, not an object store")
        return backend


def use_storage_options(options: Mapping[str, str]) -> None:
    """Set the ``--storage-option`` values of this command for every object-store URL it opens."""
    _COMMAND_OPTIONS.clear()
    _COMMAND_OPTIONS.update(options)


def locate(target: str | os.PathLike[str] | Location, options: Mapping[str, str] | None = None) -> Location:
    """The :class:`Location` of ``target``: a plain path or ``file://`` URL (local), or an object-store URL.

    A Location passes through (its own options kept, ``options`` added).
    Another scheme (``http://``, ``abfs://``, ...) is a :class:`UsageError`.
    """
    opts = dict(options or {})
    if isinstance(target, Location):
        if not opts:
            return target
        return Location(target.url, target.local, tuple(sorted({**dict(target.options), **opts}.items())))
    text = os.fspath(target)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme == "file":
        given = sorted(opts)  # a command's --storage-option with a local store is refused by the CLI
        if given:  # refused, not ignored: a local directory has no client to configure
            raise UsageError(f"{text} is a local path, but storage options ({', '.join(given)}) configure an "
                             "object-store client (s3://, gs://, az://, memory://): drop them for a local store")
        return Location(url=text, local=Path(rest if sep else text))
    if scheme not in REMOTE_SCHEMES:
        raise UsageError(f"{text}: unsupported store URL scheme {scheme!r}; use a path or one of "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    if scheme != "memory" and not rest.split("/", 1)[0]:
        raise UsageError(f"{text}: the URL names no bucket; use {scheme}://BUCKET/PATH")
    return Location(url=text.rstrip("/"), local=None, options=tuple(sorted({**_COMMAND_OPTIONS, **opts}.items())))


def _endpoint(options: Mapping[str, str]) -> str:
    """The S3 endpoint a client made now would use: the option, else the environment ('' for the default)."""
    return options.get("endpoint") or options.get("aws_endpoint") or os.environ.get("AWS_ENDPOINT_URL") \
        or os.environ.get("AWS_ENDPOINT") or ""


def _make_objects(url: str, options: dict[str, str]) -> Any:
    """An obstore store for ``url``: environment first (obstore reads it), ``options`` on top."""
    try:
        from obstore.store import MemoryStore, from_url
    except ImportError:
        raise UsageError(f"{url}: stores at URLs need obstore; install it with `pip install 'kdcache[remote]'`") \
            from None

    if url.startswith("memory://"):
        with _MEMORY_LOCK:
            return _MEMORY.setdefault(url, MemoryStore())
    options = {k: v for k, v in options.items() if k != LEASE_OPTION}
    client = {k: v for k, v in options.items() if k in _CLIENT_OPTIONS}
    config = {k: v for k, v in options.items() if k not in _CLIENT_OPTIONS}
    endpoint = _endpoint(config)
    if endpoint.startswith("http://") and "allow_http" not in client:
        client["allow_http"] = "true"  # an http:// endpoint was named explicitly (a local server)
    try:
        return from_url(url, config=config or None, client_options=client or None, retry_config=_RETRY)
    except Exception as exc:  # noqa: BLE001 - obstore's configuration errors are one-lined here
        text = " ".join(str(exc).split())
        raise UsageError(f"{url}: the storage options are not valid ({text[:160]}); see `kdcache --help` "
                         "and docs/cli.md (object-store URLs)") from None


def group_meta_at(location: Location) -> dict[str, Any] | None:
    """The zarr group metadata at ``location`` (its ``zarr.json``), or None when there is no group."""
    return location.backend.group_meta()


def malformed_group_meta(location: Location) -> str | None:
    """Why the ``zarr.json`` at ``location`` cannot be read as zarr group metadata, if one is there.

    Without this a damaged ``zarr.json`` (cut short, edited by hand) reads as "no zarr group", which
    sends the user looking for a missing store instead of a broken file.
    """
    backend = location.backend
    where = backend.where("zarr.json")
    try:
        raw = backend.read("zarr.json")
    except OSError as exc:
        return f"{where} cannot be read ({exc.strerror or exc})"
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        return f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}); the store's group metadata is damaged"
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
        return f"{where} is not zarr v3 metadata (no \"zarr_format\": 3); the store's group metadata is damaged"
    return None


def probe_location(location: Location) -> str:
    """What is at ``location`` (see :func:`kdcache.store.layout.probe`). An object store has no empty
    directories: a prefix with no objects is ``missing``, and a store may be created there."""
    return location.backend.probe()


def store_target(target: str | os.PathLike[str] | Location) -> Path | Location:
    """What a command writes to: a local store's absolute directory, or a remote store's Location.

    Kept for callers that record it; the store itself is reached through :attr:`Location.backend`.
    """
    location = locate(target)
    return location.local.expanduser().absolute() if location.local is not None else location


def probe(target: str | os.PathLike[str] | Location) -> str:
    """:func:`probe_location` of a path, URL or Location."""
    return probe_location(locate(target))

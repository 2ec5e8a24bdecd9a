"""Storage backends: one interface for a local directory and an object store, with capabilities.

As zarr-python's ``Store`` ABC separates local, memory and object stores, a
:class:`Backend` is the one place where a store's I/O differs by where it
lives: the writer lock (``flock``) or lease, whole objects by key (read,
:meth:`~Backend.replace_atomic`, exists, list, remove, size), durability
(:meth:`~Backend.sync`: fsync, or nothing after a PUT), and I/O errors as the
line a user reads (:meth:`~Backend.map_error`, :meth:`~Backend.guard`).
Callers plan by capabilities (``needs_sync``, ``file_signatures``,
``high_latency``, ``lock_kind``), never by asking "is it local?".
``memory://`` is an object store here, so its tests cover the S3 paths.
:attr:`Location.backend <kdcache.store.location.Location.backend>` hands one out.
"""

from __future__ import annotations

import contextlib
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdcache.durable import fsync_path, replace_durably
from kdcache.errors import KdcacheBug, StoreError
from kdcache.store import layout
from kdcache.store.chunks import dir_size
from kdcache.store.writing import WriterLock, naming, sync_tree

if TYPE_CHECKING:
    from kdcache.store.location import Location

__all__ = ["Backend", "LocalBackend", "ObjectBackend"]


class Backend(ABC):
    """Where a store's bytes live, and what that place can and cannot promise (see the module docstring)."""

    #: ``flock`` (a local directory) or ``lease`` (an object store, kdcache.store.lease).
    lock_kind: str
    #: Written bytes are durable only after :meth:`sync` (fsync); an object PUT is durable when it returns.
    needs_sync: bool
    #: A chunk's file can be stat'ed cheaply (:meth:`signature`), so a verified chunk need not be hashed again.
    file_signatures: bool
    #: Each read is a network round trip: a reader keeps several in flight.
    high_latency: bool
    #: Has a client that ``--storage-option`` values configure (credentials, endpoint, region).
    takes_options: bool

    def __init__(self, location: Location) -> None:
        self.location = location

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """How messages name the store: its directory or its URL."""
        return str(self.location)

    @property
    @abstractmethod
    def public_path(self) -> Path | Location:
        """What ``Store.path`` has always been: a local store's directory, an object store's Location."""

    # ------------------------------------------------------------------ zarr and locking
    @abstractmethod
    def zarr_store(self, read_only: bool) -> Any:
        """What ``zarr.open_group`` takes for this store."""

    @abstractmethod
    def writer_lock(self) -> AbstractContextManager[Any]:
        """The exclusive writer lock (``flock`` or lease): a live second writer is refused at once, naming it."""

    def check_writer(self) -> None:
        """Raise when this process may no longer write (a lease taken over); nothing to check for ``flock``."""

    def prepare(self) -> Callable[[], None]:
        """Make room for a new store (a local directory and its parents); returns what undoes it, for a first
        run that fails before a store was begun."""
        return lambda: None

    # ------------------------------------------------------------------ objects by key
    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The bytes of ``key``, or None when there is none."""

    @abstractmethod
    def replace_atomic(self, key: str, data: bytes) -> None:
        """Replace ``key`` by ``data``: a reader sees the old bytes or the new, never a mix; durable on return."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object (or file) ``key`` is there."""

    @abstractmethod
    def list(self, prefix: str = "") -> set[str]:
        """The names directly under ``prefix``: to classify a location, never to infer progress."""

    @abstractmethod
    def remove(self, prefix: str) -> None:
        """Delete everything under ``prefix`` (a node no record lists any more); nothing there is no error."""

    @abstractmethod
    def size(self, prefix: str = "") -> int:
        """Bytes stored under ``prefix`` (for ``kdcache info``)."""

    @abstractmethod
    def sync(self, prefix: str = "") -> None:
        """Make everything written under ``prefix`` (a file or a tree) durable."""

    def signature(self, key: str) -> tuple[int, int, int] | None:
        """(inode, size, mtime) of file ``key`` when :attr:`file_signatures`, else None (hash it again)."""
        return None

    # ------------------------------------------------------------------ errors
    @property
    @abstractmethod
    def errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions this backend's I/O raises, which :meth:`map_error` turns into a user's line."""

    @property
    def request_errors(self) -> tuple[type[BaseException], ...]:
        """Failed requests, which a reader one-lines (none locally: an OSError names its file as raised)."""
        return ()

    @abstractmethod
    def map_error(self, exc: BaseException, key: str) -> BaseException:
        """``exc`` (one of :attr:`errors`, raised at ``key``) as the error a user reads."""

    @contextlib.contextmanager
    def guard(self, key: str) -> Iterator[None]:
        """Run the block with this backend's I/O errors mapped (:meth:`map_error`) as raised at ``key``."""
        try:
            yield
        except self.errors as exc:
            mapped = self.map_error(exc, key)
            if mapped is exc:
                raise
            raise mapped from (exc if isinstance(mapped, OSError) else None)

    # ------------------------------------------------------------------ what is there
    def probe(self) -> str:
        """What is at the location: ``missing``, ``empty``, ``creating``, ``store``, ``file`` or ``foreign``
        (:func:`kdcache.store.layout.classify`)."""
        names = self.list()
        if not names:
            return "missing"
        return layout.classify(names, self.group_meta())

    def group_meta(self) -> dict[str, Any] | None:
        """The zarr group metadata (``zarr.json``), or None when there is no readable group."""
        import json

        raw = self.read("zarr.json")
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except ValueError:
            return None
        return meta if isinstance(meta, dict) and meta.get("node_type") == "group" else None

    def where(self, key: str) -> str:
        """How a message names ``key``: a file path or a URL."""
        return f"{self.describe()}/{key}"


class LocalBackend(Backend):
    """A local directory: zarr's ``LocalStore``, ``flock``, temp file + rename + fsync."""

    lock_kind = "flock"
    needs_sync = True
    file_signatures = True
    high_latency = False
    takes_options = False

    @property
    def root(self) -> Path:
        if self.location.local is None:
            raise KdcacheBug(f"a LocalBackend was made for {self.location}, which is not a local directory")
        return self.location.local

    @property
    def public_path(self) -> Path | Location:
        return self.root

    def path(self, key: str) -> Path:
        """The file or directory of ``key``."""
        return self.root.joinpath(*key.split("/")) if key else self.root

    def where(self, key: str) -> str:
        return str(self.path(key))

    def zarr_store(self, read_only: bool) -> Any:
        return self.root

    def writer_lock(self) -> AbstractContextManager[Any]:
        return WriterLock(self.root)

    def prepare(self) -> Callable[[], None]:
        made = []
        folder = self.root
        while not folder.exists():
            made.append(folder)
            folder = folder.parent
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.root)) from exc

        def undo() -> None:
            for made_here in made:  # deepest first; one that holds anything stays, with its parents
                try:
                    made_here.rmdir()
                except OSError:
                    break
        return undo

    def probe(self) -> str:
        return layout.probe(self.root)

    def group_meta(self) -> dict[str, Any] | None:
        return layout.group_meta(self.root)

    def read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def replace_atomic(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)  # keys make their own folders, as on an object store
        replace_durably(target, lambda f: f.write(data), binary=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> set[str]:
        folder = self.path(prefix)
        if not folder.is_dir():
            return set()
        return {child.name for child in folder.iterdir()}

    def remove(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def size(self, prefix: str = "") -> int:
        return dir_size(self.path(prefix))

    def sync(self, prefix: str = "") -> None:
        target = self.path(prefix)
        if target.is_dir():
            sync_tree(target)
        else:  # one file: itself, and the directory its rename was made in
            fsync_path(target)
            fsync_path(target.parent)

    def signature(self, key: str) -> tuple[int, int, int] | None:
        try:
            st = self.path(key).stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        return (OSError,)

    def map_error(self, exc: BaseException, key: str) -> BaseException:
        """The OSError naming ``key``'s file when the OS named none (or a temporary file, or for a full disk)."""
        return naming(self.path(key), exc) if isinstance(exc, OSError) else exc


class ObjectBackend(Backend):
    """An object store (S3, GCS, Azure, memory) through obstore: atomic PUTs, a lease, no fsync."""

    lock_kind = "lease"
    needs_sync = False
    file_signatures = False
    high_latency = True
    takes_options = True

    @property
    def public_path(self) -> Path | Location:
        return self.location

    def where(self, key: str) -> str:
        return f"{self.location.url}/{key}" if key else self.location.url

    def objects(self) -> Any:
        """The obstore store (made once per Location)."""
        from kdcache.store.location import _endpoint, _make_objects

        cache = self.location._cache
        if "store" not in cache:
            cache["store"] = _make_objects(self.location.url, dict(self.location.options))
            cache["endpoint"] = _endpoint(dict(self.location.options))  # as it was when the client was made
        return cache["store"]

    def zarr_store(self, read_only: bool) -> Any:
        from zarr.storage import ObjectStore

        return ObjectStore(self.objects(), read_only=read_only)

    def writer_lock(self) -> AbstractContextManager[Any]:
        from kdcache.store.lease import Lease

        return Lease(self.location, ttl=self.location.lease_seconds)

    def check_writer(self) -> None:
        from kdcache.store.lease import held

        lease = held(self.location)
        if lease is not None:
            lease.check()  # a writer whose lease was taken over stops before its next write

    def _call(self, key: str, request: Callable[[Any], Any]) -> Any:
        """``request(objects)``, with any obstore failure one-lined (:meth:`map_error`) as raised at ``key``."""
        objects = self.objects()  # a bad option is a UsageError of its own, not an unreachable store
        try:
            return request(objects)
        except Exception as exc:  # noqa: BLE001 - obstore's errors are one-lined here
            raise self.map_error(exc, key) from None

    def read_tagged(self, key: str) -> tuple[bytes, str | None] | None:
        """Object ``key`` and its etag (what a conditional write compares), or None when there is none."""
        import obstore
        from obstore.exceptions import NotFoundError

        def get(objects: Any) -> tuple[bytes, str | None] | None:
            try:
                result = obstore.get(objects, key)
            except (NotFoundError, FileNotFoundError):  # obstore raises either, by version
                return None
            return bytes(result.bytes()), result.meta.get("e_tag")
        return self._call(key, get)  # type: ignore[no-any-return]

    def read(self, key: str) -> bytes | None:
        found = self.read_tagged(key)
        return None if found is None else found[0]

    def replace_atomic(self, key: str, data: bytes) -> None:
        import obstore

        self._call(key, lambda objects: obstore.put(objects, key, data))

    def exists(self, key: str) -> bool:
        import obstore
        from obstore.exceptions import NotFoundError

        def head(objects: Any) -> bool:
            try:
                obstore.head(objects, key)
            except (NotFoundError, FileNotFoundError):
                return False
            return True
        return self._call(key, head)  # type: ignore[no-any-return]

    def list(self, prefix: str = "") -> set[str]:
        import obstore

        listing = self._call(prefix, lambda objects: obstore.list_with_delimiter(
            objects, prefix.rstrip("/") + "/" if prefix else None))
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"]}
        return names | {o["path"].rsplit("/", 1)[-1] for o in listing["objects"]}

    def remove(self, prefix: str) -> None:
        import obstore

        def delete(objects: Any) -> None:
            paths = [o["path"] for batch in obstore.list(objects, prefix.rstrip("/") + "/") for o in batch]
            if paths:
                obstore.delete(objects, paths)
        self._call(prefix, delete)

    def size(self, prefix: str = "") -> int:
        import obstore

        return self._call(prefix, lambda objects: sum(  # type: ignore[no-any-return]
            o["size"] for batch in obstore.list(objects, prefix or None) for o in batch))

    def sync(self, prefix: str = "") -> None:
        """Nothing: a PUT is durable when it returns."""

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        from obstore.exceptions import BaseError

        # obstore raises Python's own FileNotFoundError for some refusals (a PUT into a missing bucket):
        # on an object store no OSError names a local file, so every one is this store's error.
        return (BaseError, OSError)

    @property
    def request_errors(self) -> tuple[type[BaseException], ...]:
        return self.errors

    def map_error(self, exc: BaseException, key: str) -> BaseException:
        """An obstore error as one line: what failed, and which setting to check."""
        from kdcache.store.location import _endpoint

        text = " ".join(str(exc).split())
        lowered = text.lower()
        store = self.describe()
        if "nosuchbucket" in lowered or "bucket does not exist" in lowered:
            bucket = self.location.url.split("://", 1)[1].split("/", 1)[0]
            return StoreError(f"{store}: bucket {bucket!r} does not exist; create it or check the URL")
        name = type(exc).__name__.lower()
        if "unauthenticated" in name or "permission" in name or "accessdenied" in lowered or "signature" in lowered:
            return StoreError(f"{store}: access denied ({text[:120]}); check the credentials "
                              "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --storage-option)")
        endpoint = self.location._cache.get("endpoint") or _endpoint(dict(self.location.options)) \
            or "the default endpoint"
        return StoreError(f"{store}: cannot reach the object store at {endpoint} ({type(exc).__name__}: "
                          f"{text[:120]}); check AWS_ENDPOINT_URL or --storage-option endpoint=URL")


"""The logit store: a zarr v3 group holding raw teacher logits on replayable views.

:class:`Store` is the only way into a store: typed accessors for every node
(labels, view parameters and their checksums, logits and theirs, each
statistic), the manifest as a :class:`~kdcache.store.manifest.Manifest`, and
the writes (chunks, cards, statistics). Node paths come from
:mod:`kdcache.store.layout`. What zarr does not protect against is handled here:

* unwritten chunks read back as the fill value: logits are filled with NaN
  and progress is never inferred from zarr; each chunk has a completion record
  holding its checksum, written only after the chunk itself;
* silent corruption: every chunk a reader uses is hashed and compared with
  its record (:meth:`Store.read_logits_chunk` and friends), so a damaged store
  stops a run with a line naming the chunk;
* no fsync: the manifest is fsynced after every change, and the store's files
  before a teacher is marked ``complete``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr

from kdcache import __version__, encodings
from kdcache.errors import (StoreCorruptError, StoreError, StoreIncompleteError, StoreNotFoundError, TeacherNameError,
                            UsageError)
from kdcache.store import labels as labels_module, layout
from kdcache.store.encoded import EncodedReads
from kdcache.store.chunks import ChunkGrid, checksum, compressors, labels_record, library_versions, utc_now
from kdcache.store.manifest import DatasetRecord, Manifest, TeacherCard, ViewsRecord
from kdcache.store.layout import probe  # noqa: F401 - re-exported by kdcache.store
from kdcache.store.backend import Backend
from kdcache.store.location import Location, group_meta_at, locate, malformed_group_meta
from kdcache.store.verified import UNDECODABLE, VerifiedReads, decode, precompute_fix
from kdcache.store.view_params import ParamLayout
from kdcache.views import Recipe


class Store(VerifiedReads, EncodedReads):
    """A kdcache store (a local directory or an object-store URL): manifest, labels, view parameters,
    teachers, statistics.

    Open one with :meth:`open` (read-only unless ``mode="r+"``) or make one
    with :meth:`create`. A read-only store refuses every write (and zarr opens
    its arrays read-only too), so a store opened for distillation cannot be
    changed by mistake.
    """

    def __init__(self, path: Path | Location, group: zarr.Group, writable: bool, manifest: Manifest) -> None:
        # Where it lives (parsed), and what does its I/O: the only place local and object stores differ.
        self.location = locate(path)
        self.backend: Backend = self.location.backend
        self.group = group
        self.writable = writable
        self._manifest = manifest
        # Chunk files verified by this (read-only) store: (node, view, chunk) -> (file signature, record).
        self._seen: dict[tuple[str, int, int], tuple[tuple[int, int, int], int]] = {}
        self._handles: dict[str, zarr.Array] = {}
        self._records: dict[str, np.ndarray] = {}
        self._param_layout: ParamLayout | None = None

    @property
    def path(self) -> Path | Location:
        """Where the store lives, for messages (``str(store.path)`` is its directory or URL): a local store's
        directory, or an object store's Location. Kept for existing callers; I/O goes through :attr:`backend`."""
        return self.backend.public_path

    # ------------------------------------------------------------------ open / create
    @classmethod
    def open(cls, path: str | os.PathLike[str] | Location, mode: str = "r") -> Store:
        """Open an existing store (a path, a URL or a :class:`Location`), checking that it is a kdcache
        store this version reads."""
        loc = locate(path)
        p = loc.backend.public_path
        kind = loc.backend.probe()
        if kind == "missing":
            raise StoreNotFoundError(f"no store at {p}; make one with `kdcache precompute --out {p}`")
        if kind == "creating":
            raise StoreIncompleteError(
                f"{p}: store creation was interrupted before its manifest was written; "
                "re-run the same `kdcache precompute` command to create it"
            )
        if kind != "store" and group_meta_at(loc) is not None:
            raise StoreError(f"{p} is a zarr group but not a kdcache store (no '{layout.MANIFEST_KEY}' manifest)")
        if kind != "store":
            broken = malformed_group_meta(loc)
            if broken:
                raise StoreCorruptError(f"{broken}: restore it from a copy, or precompute the store again")
            raise StoreError(f"{p} is not a kdcache store (no zarr group there)")
        group = zarr.open_group(loc.zarr_store(read_only=mode != "r+"), mode="r+" if mode == "r+" else "r")
        raw = group.attrs[layout.MANIFEST_KEY]
        if not isinstance(raw, dict) or raw.get("format") != layout.FORMAT_NAME:
            raise StoreError(f"{p} has a '{layout.MANIFEST_KEY}' attribute that is not a kdcache manifest")
        version = raw.get("format_version")
        if version not in layout.READABLE_VERSIONS:
            raise StoreError(
                f"{p} was written in store format version {version}; this kdcache "
                f"({__version__}) reads versions {', '.join(map(str, layout.READABLE_VERSIONS))}: use the kdcache "
                "that wrote it, or precompute the store again"
            )
        store = cls(loc, group, writable=(mode == "r+"), manifest=Manifest.from_dict(raw))
        store._check_param_names(store.recipe())  # refuse a store whose recipe does not hash to its record
        return store

    @classmethod
    def create(cls, path: str | os.PathLike[str] | Location, *, dataset: DatasetRecord, labels: np.ndarray,
               views: ViewsRecord) -> Store:
        """Make a new, empty store (status ``writing``) for one dataset and view set.

        ``path`` must not exist, be an empty directory, or hold a creation that
        was interrupted before its manifest: kdcache never writes into a
        directory that holds something else. The arrays are made first and the
        manifest last, so a store with a manifest always has its arrays.
        """
        loc = locate(path)
        p = loc.backend.public_path
        kind = loc.backend.probe()
        if kind == "file":
            raise StoreError(f"{p} is a file, not a store directory; choose another path")
        if kind in ("store", "foreign"):
            raise StoreError(
                f"{p} is a non-empty directory that is not a new kdcache store; "
                "choose a new path (kdcache will not write into it)"
            )
        grid = ChunkGrid(len(labels), views.chunk_rows)
        columns = ParamLayout(Recipe.from_dict(views.recipe), layout.FORMAT_VERSION)  # packed int16 (format 2)
        try:
            group = zarr.open_group(loc.zarr_store(read_only=False), mode="a")  # may hold our own lock (checked above)
            # fill -1 (no class): a lost labels chunk reads as -1, never as a plausible class 0.
            group.create_array(layout.LABELS, data=np.asarray(labels, dtype=np.int64), compressors=None,
                               fill_value=-1, overwrite=True)
            group.create_array(
                layout.VIEW_PARAMS, shape=(views.num_views, grid.num_samples, columns.columns),
                chunks=(1, grid.chunk_rows, max(columns.columns, 1)), dtype=columns.dtype, fill_value=-1,
                compressors=None, attributes={layout.PARAM_NAMES_ATTR: columns.names}, overwrite=True,
            )
            # One zarr chunk per element: distributed ranks write disjoint records
            # without read-modify-write of a shared chunk (which loses data).
            group.create_array(layout.VIEW_CHECKSUMS, shape=(views.num_views, grid.num_chunks), chunks=(1, 1),
                               dtype="uint64", fill_value=0, compressors=None, overwrite=True)
        except loc.backend.errors as exc:
            raise loc.backend.map_error(exc, "") from exc
        now = utc_now()
        dataset = dataset.replace(labels_checksum=labels_record(labels))
        manifest = Manifest(dataset=dataset, views=views, teachers={}, status="writing", created=now,
                            updated=now, versions=library_versions())
        store = cls(loc, group, writable=True, manifest=manifest)
        store._write_manifest(manifest)
        return store

    # ------------------------------------------------------------------ manifest
    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path} is open read-only; open it with mode='r+' under the writer lock")
        self.backend.check_writer()  # a writer whose lease was taken over stops before its next write

    def _write_manifest(self, manifest: Manifest) -> None:
        """Replace the manifest: zarr writes a temp file and renames it, then it is fsynced (on an object
        store one PUT replaces it atomically, and there is nothing to fsync: :meth:`Backend.sync`)."""
        self._require_writable()
        manifest = manifest.replace(updated=utc_now())
        with self.backend.guard("zarr.json"):
            self.group.attrs[layout.MANIFEST_KEY] = manifest.to_dict()
            self.backend.sync("zarr.json")
        self._manifest = manifest

    def set_card(self, name: str, card: TeacherCard) -> None:
        """Record teacher ``name``'s card (one atomic manifest write); the store status follows the cards."""
        m = self._manifest.with_card(name, card)
        status = "complete" if all(c.status == "complete" for c in m.teachers.values()) else "writing"
        self._write_manifest(m.replace(status=status))

    @property
    def dataset(self) -> DatasetRecord:
        return self._manifest.dataset

    @property
    def views(self) -> ViewsRecord:
        return self._manifest.views

    @property
    def num_samples(self) -> int:
        return self.dataset.num_samples

    @property
    def num_views(self) -> int:
        return self.views.num_views

    @property
    def grid(self) -> ChunkGrid:
        return ChunkGrid(self.num_samples, self.views.chunk_rows)

    @property
    def status(self) -> str:
        return self._manifest.status

    def recipe(self) -> Recipe:
        """The recorded recipe, refused when it does not hash to the recorded ``recipe_hash``."""
        recipe = Recipe.from_dict(self.views.recipe)
        if recipe.hash() != self.views.recipe_hash:
            raise StoreError(
                f"{self.path}: the recorded recipe hashes to {recipe.hash()[:19]}..., the manifest says "
                f"{self.views.recipe_hash[:19]}...; the manifest was edited or written by another kdcache"
            )
        return recipe

    def _check_param_names(self, recipe: Recipe) -> None:
        """Refuse a store whose recorded parameter names are not the ones its recipe draws.

        A view is rendered by handing the recorded integers to the recipe in
        order: names that differ (another kdcache, an edited record) would
        render every view from the wrong numbers.
        """
        columns = ParamLayout(recipe, self.manifest.format_version).names  # packed names in format 2
        for where, names, expected in (
                ("manifest views.param_names", list(self.views.param_names), recipe.param_names()),
                (f"{layout.VIEW_PARAMS} attribute '{layout.PARAM_NAMES_ATTR}'", self.param_names(), columns)):
            if names != expected:
                raise StoreError(
                    f"{self.path}: {where} is {names} but its recipe draws {expected}; the store was "
                    "edited or written by another kdcache: precompute it again"
                )

    def teacher_names(self) -> list[str]:
        return list(self._manifest.teachers)

    def card(self, name: str | None = None) -> TeacherCard:
        """The card of teacher ``name`` (or the only teacher when ``name`` is None)."""
        return self._manifest.teachers[self.resolve_teacher(name)]

    def resolve_teacher(self, name: str | None) -> str:
        """Pick a teacher by name, or the only one; a clear error otherwise."""
        names = self.teacher_names()
        if name is None:
            if len(names) == 1:
                return names[0]
            if not names:
                raise StoreIncompleteError(f"{self.path} holds no teacher yet; run `kdcache precompute`")
            raise TeacherNameError(
                f"{self.path} holds several teachers ({', '.join(names)}); pass --teacher-name NAME")
        if name not in names:
            raise TeacherNameError(f"{self.path} has no teacher {name!r}; it has: {', '.join(names) or 'none'}")
        return name

    def require_complete(self, teacher: str | None = None) -> str:
        """Refuse a store (or teacher) that is still being written; returns the teacher name."""
        name = self.resolve_teacher(teacher)
        if self.card(name).status != "complete":
            raise StoreIncompleteError(
                f"teacher {name!r} in {self.path} is still being written (or its run was "
                "interrupted); finish it by re-running the same `kdcache precompute` command"
            )
        return name

    # ------------------------------------------------------------------ arrays
    def _array(self, node: str) -> zarr.Array:
        # A read-only store keeps its array handles: each zarr lookup re-reads metadata (~1 ms).
        if node in self._handles:
            return self._handles[node]
        try:
            arr = self.group[node]
        except KeyError:
            raise StoreError(f"{self.path} lacks {node}; the store is damaged (run `kdcache verify {self.path}`)") from None
        except UNDECODABLE as exc:  # its zarr.json is damaged (cut short, overwritten)
            raise StoreCorruptError(
                f"{self.path}: the metadata of {node} cannot be read ({type(exc).__name__}: {str(exc)[:80]}); "
                "the store is damaged: precompute it again"
            ) from None
        if not self.writable:
            self._handles[node] = arr  # type: ignore[assignment]
        return arr  # type: ignore[return-value]

    def _record(self, sums_node: str, view: int, chunk: int) -> int:
        """The checksum record of (view, chunk) from ``sums_node``; a read-only store loads all once."""
        where = f"{self.path}: {sums_node}"
        if self.writable:
            return int(decode(where, lambda: self._array(sums_node)[view, chunk], self.backend))
        if sums_node not in self._records:
            self._records[sums_node] = decode(where, lambda: np.asarray(self._array(sums_node)[:]), self.backend)
        return int(self._records[sums_node][view, chunk])

    def labels(self, verify: bool = True) -> np.ndarray:
        """The (N,) int64 labels, checked against the manifest's record (format 2) or for range (format 1).

        Every reader of labels (statistics, a teacher's accuracy, verify) goes through here, so labels
        changed or lost after precompute fail in one line instead of giving wrong statistics.
        """
        arr = self._array(layout.LABELS)
        labels = np.asarray(decode(f"{self.path}: {layout.LABELS}", lambda: arr[:], self.backend), dtype=np.int64)
        if verify:
            problem = self.labels_problem(labels)
            if problem:
                raise StoreCorruptError(f"{self.path}: {problem}; {precompute_fix(self.path)} "
                                        "(it rewrites them from the dataset)")
        return labels

    def labels_problem(self, labels: np.ndarray) -> str | None:
        """What is wrong with ``labels`` as read from this store, or None (:func:`kdcache.store.labels.problem`)."""
        return labels_module.problem(self, labels)

    def rewrite_labels(self, labels: np.ndarray) -> bool:
        """Rewrite damaged labels from the dataset's; True if they were damaged (:func:`kdcache.store.labels.rewrite`)."""
        return labels_module.rewrite(self, labels)

    def params(self) -> zarr.Array:
        """``views/params`` as stored: (V, N, columns) int16 packed (format 2) or (V, N, P) int32 (format 1);
        :meth:`read_params_chunk` gives the (rows, P) int32 params."""
        return self._array(layout.VIEW_PARAMS)

    @property
    def param_layout(self) -> ParamLayout:
        """How this store lays out ``views/params`` (packed int16 columns from format 2 on)."""
        if self._param_layout is None:
            self._param_layout = ParamLayout(self.recipe(), self.manifest.format_version)
        return self._param_layout

    def param_names(self) -> list[str]:
        return list(self.params().attrs.get(layout.PARAM_NAMES_ATTR, []))

    def view_checksums(self) -> zarr.Array:
        return self._array(layout.VIEW_CHECKSUMS)

    def logits(self, teacher: str) -> zarr.Array:
        return self._array(layout.logits(teacher))

    def logit_checksums(self, teacher: str) -> zarr.Array:
        return self._array(layout.logit_checksums(teacher))

    def logits_bytes(self, teacher: str) -> int:
        """Bytes on disk of ``teacher``'s encoded logits (every part)."""
        return sum(self.backend.size(node + "/") for _, node in self.part_nodes(teacher))

    def disk_bytes(self) -> int:
        return self.backend.size()

    def iter_chunks(self) -> Iterator[tuple[int, int]]:
        """All (view, chunk) pairs in write order."""
        for v in range(self.num_views):
            for j in range(self.grid.num_chunks):
                yield v, j

    def write_chunk(self, teacher: str, view: int, chunk: int, logits: np.ndarray | dict[str, np.ndarray],
                    params: np.ndarray | None) -> None:
        """Write one chunk of logits (already encoded: one float array, or the encoding's parts) and, for a
        new view set, its params.

        Each array's record goes after its data: a chunk without one is redone
        on resume, and an OSError names the chunk's file.
        """
        self._require_writable()
        start, stop = self.grid.bounds(chunk)
        node = layout.VIEW_PARAMS
        try:
            if params is not None:
                stored = self.param_layout.to_disk(params)  # the record hashes the bytes on disk
                self.params()[view, start:stop] = stored
                self.view_checksums()[view, chunk] = checksum(stored)
            parts = logits if isinstance(logits, dict) else {"logits": logits}
            for name, data in parts.items():
                node = layout.part(teacher, name)
                self._array(node)[view, start:stop] = data
            self.logit_checksums(teacher)[view, chunk] = checksum(*parts.values())
        except self.backend.errors as exc:
            raise self.backend.map_error(exc, layout.chunk_key(node, view, chunk, 0)) from exc

    def add_teacher(self, name: str, card: TeacherCard) -> None:
        """Create the arrays of a new teacher, then record its card (status ``writing``)."""
        self._require_writable()
        try:
            enc = encodings.parse(card.encoding)
        except UsageError:
            raise StoreError(f"unknown encoding {card.encoding!r}; choose one of {', '.join(encodings.forms())}") from None
        grid = self.grid
        try:
            # overwrite: arrays of a teacher whose card was never written are leftovers, not data.
            for part in enc.parts(card.num_classes):
                self.group.create_array(
                    layout.part(name, part.name), shape=(self.num_views, grid.num_samples, *part.trailing),
                    chunks=(1, grid.chunk_rows, *part.trailing), dtype=part.dtype,
                    # float parts fill with NaN, never 0: a chunk never written cannot pass for logits.
                    fill_value=part.fill, compressors=compressors(card.codec), overwrite=True,
                )
            self.group.create_array(layout.logit_checksums(name), shape=(self.num_views, grid.num_chunks),
                                    chunks=(1, 1), dtype="uint64", fill_value=0, compressors=None, overwrite=True)
        except self.backend.errors as exc:  # a full disk names the teacher's directory; an object store, itself
            raise self.backend.map_error(exc, layout.teacher_dir(name)) from exc
        self.set_card(name, card.replace(status="writing", started=utc_now()))

    def pending_chunks(self, teacher: str) -> tuple[list[tuple[int, int]], int]:
        """Chunks of ``teacher`` still to compute, and how many of them were written but no longer match."""
        sums = np.asarray(self.logit_checksums(teacher)[:])
        pending: list[tuple[int, int]] = []
        redone = 0
        for v, j in self.iter_chunks():
            if sums[v, j] == 0:
                pending.append((v, j))
                continue
            try:
                intact = checksum(*self.read_encoded_chunk(teacher, v, j, verify=False).values()) == int(sums[v, j])
            except UNDECODABLE:
                intact = False  # cut short: zarr cannot even decode it
            if not intact:
                pending.append((v, j))  # torn by a power loss after its record: compute it again
                redone += 1
        return pending, redone

    def recorded_views(self) -> np.ndarray:
        """(V, K) bool: which chunks of ``views/params`` are recorded."""
        return np.asarray(self.view_checksums()[:]) != 0

    def sync(self) -> None:
        """Flush the store's files to stable storage (before a teacher is declared complete); an object
        store's PUTs are durable when they return (:meth:`Backend.sync`)."""
        self.backend.sync()

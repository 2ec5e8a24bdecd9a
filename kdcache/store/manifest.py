"""The store's records as frozen dataclasses: manifest, dataset record, views record, teacher card.

Each record converts to and from the JSON of ``docs/store-format.md``
(:meth:`to_dict` / :meth:`from_dict`, which validates types and keeps keys
this version does not know, so a card written by a newer kdcache survives a
round trip). What makes two records "the same" for a resume (same data,
same views, same teacher) is declared on the fields themselves
(``identity=True`` metadata) and compared by :func:`differences`; there is no
separate key list to forget a field in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from kdcache.errors import StoreError
from kdcache.store.layout import FORMAT_NAME, FORMAT_VERSION

T = TypeVar("T", bound="_Record")


def _identity(default: Any = dataclasses.MISSING) -> Any:
    """A field that is part of the record's identity (compared on resume)."""
    if default is dataclasses.MISSING:
        return field(metadata={"identity": True})
    return field(default=default, metadata={"identity": True})


# JSON type checks per annotation string (annotations are strings under `from __future__ import annotations`).
_CHECKS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "list[int]": (list,), "list[str]": (list,),
    "dict[str, Any]": (dict,), "str | None": (str, type(None)), "int | None": (int, type(None)),
    "list[float] | None": (list, type(None)), "Any": (object,),
    "dict[str, Any] | None": (dict, type(None)),
}


@dataclass(frozen=True)
class _Record:
    """Shared JSON conversion and identity of the records below."""

    what: ClassVar[str] = "record"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _Record) else value
        return {**self.extra_dict(), **out}

    def extra_dict(self) -> dict[str, Any]:
        return dict(getattr(self, "extra", {}) or {})

    @classmethod
    def from_dict(cls: type[T], d: Any, where: str = "") -> T:
        """Validate ``d`` (JSON) into this record; unknown keys are kept in ``extra``."""
        where = where or cls.what
        if not isinstance(d, Mapping):
            raise StoreError(f"{where} is not a JSON object; the store is damaged or was not written by kdcache")
        kwargs: dict[str, Any] = {}
        known = set()
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            known.add(f.name)
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise StoreError(f"{where} lacks {f.name!r}; the store is damaged or was not written by kdcache")
                continue
            value = cls._convert(f.name, d[f.name], where)
            allowed = _CHECKS.get(str(f.type), (object,))
            if isinstance(value, bool) and bool not in allowed and int in allowed:
                allowed = ()  # JSON true is not an integer here
            if not isinstance(value, allowed):
                raise StoreError(f"{where}.{f.name} has the wrong type ({type(value).__name__}): {value!r:.80}")
            kwargs[f.name] = value
        if any(f.name == "extra" for f in dataclasses.fields(cls)):
            kwargs["extra"] = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs)

    @classmethod
    def _convert(cls, name: str, value: Any, where: str) -> Any:
        return value

    def identity(self) -> dict[str, Any]:
        """The fields that say whether two records describe the same thing (JSON values)."""
        return {f.name: self.to_dict()[f.name] for f in dataclasses.fields(self) if f.metadata.get("identity")}

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)


def differences(expected: _Record, found: _Record, what: str) -> list[str]:
    """Human lines for every identity field where ``found`` (the store) differs from ``expected`` (this run)."""
    want, have = expected.identity(), found.identity()
    return [f"{what} {key}: store has {have[key]!r}, this run has {want[key]!r}"
            for key in want if want[key] != have.get(key)]


@dataclass(frozen=True)
class DatasetRecord(_Record):
    """What data the store was made from (``manifest.dataset``)."""

    what: ClassVar[str] = "manifest.dataset"
    spec: str
    name: str = _identity()
    num_samples: int = _identity()
    num_classes: int = _identity()
    fingerprint: str = _identity()
    split: str | None = _identity(None)
    channels: int | None = None
    # The labels' checksum (16 hex digits of :func:`kdcache.store.chunks.checksum` over them as little-endian
    # int64), from format version 2; None in a version 1 store, whose labels are checked for range only.
    labels_checksum: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ViewsRecord(_Record):
    """The view set (``manifest.views``): V views per sample, drawn once with a recipe and a seed."""

    what: ClassVar[str] = "manifest.views"
    seed: int = _identity()
    num_views: int = _identity()
    recipe: dict[str, Any] = field(default_factory=dict)
    recipe_hash: str = _identity("")
    seed_derivation: str = _identity("numpy PCG64(SeedSequence([seed, sample, view]))")
    param_names: list[str] = field(default_factory=list)
    chunk_rows: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherCard(_Record):
    """One teacher in the store (``manifest.teachers[name]``).

    Identity fields say what computed the logits (program, weights, input
    render, numerics); the rest records progress and results.
    """

    what: ClassVar[str] = "teacher card"
    spec: str = _identity()
    num_classes: int = _identity()
    in_channels: int = _identity()
    render: dict[str, Any] = _identity()
    encoding: str = _identity()
    codec: str = _identity()
    micro_batch: int = _identity()
    input_size: list[int] = _identity()
    weights_sha256: str | None = _identity(None)
    program_sha256: str | None = _identity(None)
    state_sha256: str | None = _identity(None)  # an import: factory's returned state, without weights
    random_init: bool = _identity(False)
    # The torch seed a random-init teacher was built from (so a resume or a replay rebuilds it).
    init_seed: int | None = _identity(None)
    # Autocast dtype of the teacher's inference (fp32: none); other precisions give other bits.
    precision: str = _identity("fp32")
    weights: str | None = None  # absolute path when recorded; may move (its SHA-256 may not)
    trained: Any = None
    status: str = "writing"
    started: str | None = None
    finished: str | None = None
    accuracy_per_view: list[float] | None = None
    # Where the logits were scored (library versions, CPU capability, device, CUDA/cuDNN):
    # compared on resume and by `verify --replay` (see kdcache.store.chunks.platform_record).
    platform: dict[str, Any] | None = None
    # name -> {provider parameters, "node" (the array holding it), "computed"}; see kdcache.stats.
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _convert(cls, name: str, value: Any, where: str) -> Any:
        if name == "stats" and isinstance(value, dict):
            # Cards of the first version listed {"accuracy": [...], "computed": "..."} next to the
            # statistics; each entry is now an object of its own.
            computed = value.get("computed") if isinstance(value.get("computed"), str) else None
            out = {}
            for key, entry in value.items():
                if key == "computed":
                    continue
                entry = dict(entry) if isinstance(entry, dict) else {}
                if computed and "computed" not in entry:
                    entry["computed"] = computed
                out[key] = entry
            return out
        return value


@dataclass(frozen=True)
class Manifest(_Record):
    """The store's manifest (group attribute ``kdcache``)."""

    what: ClassVar[str] = "manifest"
    dataset: DatasetRecord
    views: ViewsRecord
    teachers: dict[str, TeacherCard] = field(default_factory=dict)
    status: str = "writing"
    created: str = ""
    updated: str = ""
    versions: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["teachers"] = {name: card.to_dict() for name, card in self.teachers.items()}
        return out

    @classmethod
    def _convert(cls, name: str, value: Any, where: str) -> Any:
        if name == "dataset":
            return DatasetRecord.from_dict(value)
        if name == "views":
            return ViewsRecord.from_dict(value)
        if name == "teachers":
            if not isinstance(value, Mapping):
                raise StoreError("manifest.teachers is not a JSON object; the store is damaged")
            return {str(k): TeacherCard.from_dict(v, f"teacher card {k!r}") for k, v in value.items()}
        return value

    def with_card(self, name: str, card: TeacherCard) -> Manifest:
        """This manifest with teacher ``name``'s card set to ``card`` (added or replaced)."""
        return self.replace(teachers={**self.teachers, name: card})

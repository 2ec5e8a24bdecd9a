"""``kdcache ensemble``: a derived teacher, combined row by row from teachers of the same store.

Several teachers of one store were scored on the same recorded views, so an
ensemble of them needs no teacher to run again: each chunk of every member is
read (checksum-verified; a compact member decoded), the rows are combined by
:func:`combine`, and the result is written as a new teacher entry through
:class:`~kdcache.store.teacher_writer.TeacherWriter` (checksummed, resumable:
a killed run resumes to the same bits). How (``HOWS``), with z_k member k's
logits, w_k its normalised weight and T the temperature:

* ``mean-prob``: s = T·log Σ_k w_k softmax(z_k / T), so softmax(s / T) is the
  members' mean softened distribution at T;
* ``mean-logit``: s = Σ_k w_k z_k;
* ``confidence`` (CA-MKD): per row, w_k = (1 − softmax_k(CE_k)) / (M − 1), the
  softmax over the M members of CE_k, member k's cross-entropy on the row's
  label; s = Σ_k w_k z_k;
* ``best``: per row, the member with the lowest CE on the label (ties: the first named).

A mixed view's label is its recorded pair: CE = λ·CE(y) + (1 − λ)·CE(partner).
The card records ``derived`` (:mod:`kdcache.store.derivation`); the maths is
float64 numpy, so the rows are bitwise reproducible on the platform the card
records, which ``verify --replay`` re-derives (:mod:`kdcache.audit.derived`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdcache import encodings
from kdcache.encodings.base import logsumexp
from kdcache.encodings.consume import ALLOW_FLAG
from kdcache.errors import ApproximateEncodingWarning, StoreMismatchError, UsageError, warn
from kdcache.progress import make_progress, rate_text
from kdcache.store import Store, TeacherCard, locate, platform_record, writer_lock
from kdcache.store.derivation import KEY, records_digest, require_current
from kdcache.store.location import Location
from kdcache.store.teacher_writer import Producer, TeacherWriter, check_name
from kdcache.views.mix import mixed_labels

HOWS = ("mean-prob", "mean-logit", "confidence", "best")
WEIGHTED = ("mean-prob", "mean-logit")  # the hows that take user weights (the others weigh per row)


@dataclass(frozen=True)
class Ensemble:
    """How members combine: names, rule, normalised weights (None where the rule weighs per row), T."""

    members: tuple[str, ...]
    how: str
    weights: tuple[float, ...] | None
    temperature: float = 1.0

    @property
    def decode_temperature(self) -> float:
        """The temperature compact members are decoded at: the ensemble's for mean-prob, else 1."""
        return self.temperature if self.how == "mean-prob" else 1.0


def _log_softmax(z: np.ndarray) -> np.ndarray:
    return z - logsumexp(z, axis=-1)[..., None]


def _cross_entropy(z: np.ndarray, labels: np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """(M, rows) cross-entropy of each member's float64 logits ``z`` (M, rows, C) on the rows' labels."""
    logp = _log_softmax(z)
    rows = np.arange(z.shape[1])
    if isinstance(labels, tuple):  # a mixed view: (own label, partner's label, λ)
        y, partner, lam = labels
        lam64 = np.asarray(lam, dtype=np.float64)
        return -(lam64 * logp[:, rows, y] + (1.0 - lam64) * logp[:, rows, partner])
    return -logp[:, rows, np.asarray(labels, dtype=np.int64)]


def combine(logits: Sequence[np.ndarray], labels: Any, ensemble: Ensemble) -> np.ndarray:
    """The derived (rows, C) float32 logits of one chunk from each member's (rows, C) logits, in float64.

    ``labels`` (only read by ``confidence`` and ``best``): the rows' (rows,) labels, or
    ``(label, partner label, λ)`` for mixed views.
    """
    z = np.stack([np.asarray(x, dtype=np.float64) for x in logits])  # (M, rows, C)
    m = z.shape[0]
    if ensemble.how == "mean-prob":
        t = ensemble.temperature
        log_w = np.log(np.asarray(ensemble.weights, dtype=np.float64))[:, None, None]
        s = t * logsumexp(log_w + _log_softmax(z / t), axis=0)  # never -inf: each term is finite
    elif ensemble.how == "mean-logit":
        s = np.tensordot(np.asarray(ensemble.weights, dtype=np.float64), z, axes=1)
    elif ensemble.how == "confidence":
        ce = _cross_entropy(z, labels)  # (M, rows)
        w = (1.0 - np.exp(_log_softmax(ce.T))) / (m - 1)  # (rows, M); each row sums to 1
        s = np.einsum("rm,mrc->rc", w, z)
    elif ensemble.how == "best":
        best = np.argmin(_cross_entropy(z, labels), axis=0)  # the first member among ties
        s = z[best, np.arange(z.shape[1])]
    else:
        raise UsageError(f"how {ensemble.how!r} is not one of {', '.join(HOWS)}")
    return s.astype(np.float32)


def chunk_labels(store: Store, ensemble: Ensemble, labels: np.ndarray, view: int, chunk: int) -> Any:
    """The labels ``combine`` needs for one chunk (None for the mean rules): the stored labels, or for
    mixed views the recorded pair and λ."""
    if ensemble.how in WEIGHTED:
        return None
    start, stop = store.grid.bounds(chunk)
    pair = mixed_labels(store.recipe(), store.read_params_chunk(view, chunk), labels, np.arange(start, stop))
    return labels[start:stop] if pair is None else pair


def derive_chunk(store: Store, ensemble: Ensemble, labels: np.ndarray, view: int, chunk: int) -> np.ndarray:
    """One chunk of the derived teacher from the members' stored rows (the writer and the replay both call it)."""
    rows = [store.read_logits_chunk(m, view, chunk, temperature=ensemble.decode_temperature)
            for m in ensemble.members]
    return combine(rows, chunk_labels(store, ensemble, labels, view, chunk), ensemble)


def from_record(record: Mapping[str, Any]) -> Ensemble:
    """The :class:`Ensemble` a card's ``derived`` record describes."""
    weights = record.get("weights")
    return Ensemble(tuple(record["members"]), str(record["how"]), None if weights is None else tuple(weights),
                    float(record.get("temperature", 1.0)))


def normalised_weights(members: Sequence[str], how: str,
                       weights: Mapping[str, float] | None) -> tuple[float, ...] | None:
    """Each member's weight divided by their sum (equal when none is given); None for a per-row rule."""
    weights = dict(weights or {})
    if how not in WEIGHTED:
        if weights:
            raise UsageError(f"weights apply to {' and '.join(WEIGHTED)}; {how} weighs the members per row")
        return None
    unknown = [name for name in weights if name not in members]
    if unknown:
        raise UsageError(f"weight for {unknown[0]!r}, which is not a member ({', '.join(members)})")
    raw = [float(weights.get(name, 1.0)) for name in members]
    if any(not math.isfinite(w) or w <= 0 for w in raw):
        raise UsageError(f"weights must be positive numbers; got {dict(zip(members, raw))}")
    return tuple(w / sum(raw) for w in raw)


def _approximate(store: Store, ensemble: Ensemble) -> list[str]:
    """Members whose decoded rows are not exact for this rule: a sample (probabilities at T') is exact only
    for mean-prob at T = T', which averages probabilities (linear, as a KD loss reading it at T')."""
    out = []
    for m in ensemble.members:
        enc = store.encoding(m)
        exact = ensemble.how == "mean-prob" and enc.temperature == ensemble.temperature
        if enc.kind == "probabilities" and not exact:
            out.append(f"{m} ({enc.spec})")
    return out


@dataclass(frozen=True)
class _Plan:
    name: str
    card: TeacherCard
    producer: Producer
    ensemble: Ensemble
    approximate: list[str]


def _plan(store: Store, members: Sequence[str], how: str, new_name: str, weights: Mapping[str, float] | None,
          temperature: float, encoding: str, allow_approximate: bool) -> _Plan:
    """Every refusal, on the store as read (before the lock and again under it), and the entry to write."""
    if how not in HOWS:
        raise UsageError(f"how {how!r} is not one of {', '.join(HOWS)}")
    if len(members) < 2 or len(set(members)) != len(members):
        raise UsageError(f"an ensemble needs two or more distinct members; got {list(members)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise UsageError(f"temperature must be a positive number, got {temperature}")
    if how != "mean-prob" and temperature != 1.0:
        raise UsageError(f"temperature applies to mean-prob; {how} reads the members' logits as they are")
    enc = encodings.parse(encoding)
    for m in members:
        store.require_complete(m)  # an unknown member is a usage error; one still being written, refused
        require_current(store, m)  # a member derived from teachers that changed since
    first = store.card(members[0])
    for m in members[1:]:
        card = store.card(m)
        if card.num_classes != first.num_classes:
            raise StoreMismatchError(f"members {members[0]!r} and {m!r} have {first.num_classes} and "
                                     f"{card.num_classes} classes; an ensemble combines teachers of one label set")
        if (card.render, card.input_size) != (first.render, first.input_size):
            raise StoreMismatchError(f"members {members[0]!r} and {m!r} were scored on other views (renders "
                                     f"{first.render} at {first.input_size} vs {card.render} at {card.input_size}); "
                                     "an ensemble combines teachers that saw the same images")
    problem = enc.check(first.num_classes)
    if problem:
        raise UsageError(problem)
    ensemble = Ensemble(tuple(members), how, normalised_weights(members, how, weights), float(temperature))
    approximate = _approximate(store, ensemble)
    if approximate and not allow_approximate:
        raise UsageError(f"{', '.join(approximate)} holds a sample of probabilities, which {how} at "
                         f"T={temperature:g} does not read exactly; pass {ALLOW_FLAG} to combine the sample anyway")
    record = {"how": how, "members": list(members), "weights": None if ensemble.weights is None else
              list(ensemble.weights), "temperature": float(temperature),
              "records": {m: records_digest(store, m) for m in members}}
    # float64 numpy maths: bitwise only on one platform (SIMD exp/log differ), so resumed where it started.
    producer = Producer(name_option="--as", provenance={KEY: record}, platform_bound=True)
    name = check_name(new_name, producer)
    if name in members:
        raise UsageError(f"--as {name!r} is a member; give the ensemble another name")
    card = first.replace(spec=f"ensemble:{how}({','.join(members)})", encoding=enc.spec, weights=None,
                         weights_sha256=None, program_sha256=None, state_sha256=None, random_init=False,
                         init_seed=None, trained=None, precision="fp32", platform=platform_record("cpu"), extra={})
    TeacherWriter.check(store, name, card, producer)
    return _Plan(name, card, producer, ensemble, approximate)


@dataclass
class EnsembleResult:
    """What one ``kdcache ensemble`` produced (printed by the CLI)."""

    store: str
    name: str
    how: str
    members: list[str]
    weights: list[float] | None
    temperature: float
    encoding: str
    rows_written: int
    rows_skipped: int
    seconds: float
    accuracy: float
    member_accuracy: dict[str, float]


def ensemble(path: str | os.PathLike[str] | Location, *, members: Sequence[str], how: str, new_name: str,
             weights: Mapping[str, float] | None = None, temperature: float = 1.0, encoding: str = "float32",
             allow_approximate: bool = False, progress: bool = True) -> EnsembleResult:
    """Derive teacher ``new_name`` of the store at ``path`` from ``members`` combined by ``how``.

    Every refusal comes before the writer lock; the entry's life (resume,
    checksums, sync, accuracy, ``complete``) is
    :class:`~kdcache.store.teacher_writer.TeacherWriter`'s.
    """
    location = locate(path)
    args = (members, how, new_name, weights, temperature, encoding, allow_approximate)
    plan = _plan(Store.open(location), *args)
    if plan.approximate:
        warn(f"combining {', '.join(plan.approximate)} by {how} at T={temperature:g} ({ALLOW_FLAG}): the sample "
             "stands in for the member's probabilities, an approximation", ApproximateEncodingWarning)
    with writer_lock(location):
        store = Store.open(location, mode="r+")
        plan = _plan(store, *args)  # the members as they are now, under the lock
        entry = TeacherWriter.begin(store, plan.name, plan.card, plan.producer)
        labels = store.labels()
        t0, done = time.perf_counter(), 0
        with make_progress(enabled=progress) as bar:
            task = bar.add_task(f"ensemble {how} -> {plan.name}", total=entry.plan.rows_pending, rate="")
            for v, j in entry.pending:
                start, stop = store.grid.bounds(j)
                entry.write(v, j, derive_chunk(store, plan.ensemble, labels, v, j))
                done += stop - start
                bar.update(task, advance=stop - start, rate=rate_text(done, time.perf_counter() - t0, "rows"))
        seconds = time.perf_counter() - t0
        accuracy = entry.finish()
        e = plan.ensemble
        return EnsembleResult(
            store=str(store.path), name=plan.name, how=how, members=list(e.members),
            weights=None if e.weights is None else list(e.weights), temperature=e.temperature,
            encoding=plan.card.encoding, rows_written=done, rows_skipped=entry.plan.rows_stored, seconds=seconds,
            accuracy=float(np.mean(accuracy)) if accuracy else 0.0,
            member_accuracy={m: float(np.mean(store.card(m).accuracy_per_view or [0.0])) for m in e.members})

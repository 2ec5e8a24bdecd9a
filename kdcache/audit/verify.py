"""``kdcache verify``: every chunk complete and matching its checksum; ``--replay`` re-runs the teacher.

The replay renders, from the parameters recorded in the store, the whole
teacher micro-batch holding each chosen (sample, view) pair, exactly as
precompute scored it, and compares values:

* where the platform matches the one the teacher's card records (CPU
  instruction set, machine, device, CUDA/cuDNN, torch, torchvision and numpy
  versions; cards of older stores record none, and the manifest's versions
  stand in, as the report says), the replayed logits, encoded like
  the store, must equal the stored bytes bit for bit;
* elsewhere bits cannot be expected (other kernels round differently: an int8
  code may round the other way, a near-tied top-K member swap, a sample draw
  differently), so the stored parts are checked against what the encoding
  guarantees about the recomputed float32 logits
  (:meth:`kdcache.encodings.Encoding.replay_mismatch`, stated by its
  ``replay_rule``), each logit the store encoded taken to lie within a slack
  of the recomputed one: 1e-4 times the row's largest |logit|, at least
  1e-4 (other kernels' float32 round-off, with margin), plus half an ulp at
  that magnitude of each float source a converted teacher was encoded
  through. The worst ratio to its bound is reported; above 1 fails. A row no
  encoder writes (an id that is not a class) fails as damaged.

A teacher made by ``kdcache convert`` is replayed the way convert made it:
the replayed logits are encoded as its float source stores them (float16
rounds), and those values are encoded by :func:`kdcache.precompute.convert.encode_from_source`,
the function convert writes with (following a chain of converts back to the
teacher precompute ran).

Any mismatch fails, naming the first (sample, view).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdcache import encodings
from kdcache.precompute.convert import encode_from_source
from kdcache.data import open_data
from kdcache.errors import StoreCorruptError, StoreMismatchError, UsageError
from kdcache.models import run_model, sha256_file
from kdcache.progress import make_progress
from kdcache.precompute.scoring import build_teacher, teacher_autocast
from kdcache.store import BITWISE_KEYS, Store, platform_differences, platform_record
from kdcache.store.derivation import change_problems, derivation
from kdcache.store.integrity import check_chunks
from kdcache.store.manifest import TeacherCard
from kdcache.views import Render, ViewDataset

# What must match for bitwise agreement to be expected.
PLATFORM_KEYS = BITWISE_KEYS
RELATIVE_SLACK = 1e-4


@dataclass
class ReplayResult:
    pairs: int
    max_abs_diff: float
    argmax_agreement: float
    same_platform: bool = True
    bitwise: bool = True  # every replayed row equals the stored encoding bit for bit
    tolerance_exceeded: float = 0.0  # worst ratio to the encoding's replay bound (off-platform only; <= 1 passes)
    first_mismatch: tuple[int, int] | None = None
    damaged: str | None = None  # why the first mismatching row is one no encoder writes, if it is
    rule: str = ""  # what the off-platform check compares (the encoding's replay_rule, and the slack)
    platform_differences: list[str] = field(default_factory=list)
    platform_source: str = "teacher card"  # or "manifest" for a card that records no platform
    asked: int = 0  # pairs asked for (more than the store holds: every pair was replayed)
    labels_differ: str | None = None  # the store's labels differ from the dataset's (a format 1 store)


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_store`; ``ok`` is what the exit code says."""

    path: Path
    chunks_checked: int = 0
    problems: list[str] = field(default_factory=list)
    replay: dict[str, ReplayResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # facts that explain the figures (not problems)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(path: str | Path, *, replay: int = 0, teacher: str | None = None, data: str | None = None,
                 weights: str | None = None, seed: int = 0, progress: bool = False) -> VerifyReport:
    """Check completeness and checksums of every chunk; optionally replay ``replay`` pairs.

    ``data`` and ``weights`` override where the dataset and the teacher's
    checkpoint are found (a store moved to another machine); both are checked
    against the fingerprint and SHA-256 recorded in the store. Only a replay
    reads them: given without one they raise :class:`UsageError` (refused, as
    docs/cli.md promises, not ignored).
    """
    if replay <= 0:  # refused, not ignored: only a replay reads the dataset and the checkpoint
        given = [option for option, v in (("--data", data), ("--weights", weights)) if v is not None]
        if given:
            both = len(given) > 1
            raise UsageError(f"{' and '.join(given)} only appl{'y' if both else 'ies'} with --replay N (checking "
                             "checksums reads neither the dataset nor the checkpoint); "
                             f"drop {'them' if both else 'it'} or add --replay N")
    store = Store.open(path)
    report = VerifyReport(path=store.path)
    names = [store.resolve_teacher(teacher)] if teacher else store.teacher_names()
    report.chunks_checked, report.problems = check_chunks(store, names)
    report.problems += change_problems(store, names)  # derived teachers: members as recorded
    if store.dataset.labels_checksum is None:
        report.notes.append(f"format version {store.manifest.format_version}: its labels carry no checksum record, "
                            "so they are checked for range here (and against the dataset by --replay)")
    for name in names:
        if store.card(name).encoding.startswith("sample"):
            report.notes.append(f"teacher {name!r}: {store.card(name).encoding} stores draws from the teacher's "
                                "softmax, not its logits, so the argmax of the decoded row is a drawn class and an "
                                "argmax agreement below 100% is expected; the replay checks the draws bit for bit")
    if replay > 0 and not report.problems:
        for name in _with_members(store, names):
            record = derivation(store, name)
            if record is not None:  # kdcache ensemble: re-derived from its members' rows
                from kdcache.audit.derived import replay_derived  # (it imports this module)

                report.notes.append(f"teacher {name!r} is derived ({record['how']} of {', '.join(record['members'])})"
                                    ": its replay re-derived from its members' stored rows, and the members are "
                                    "replayed themselves")
                r = replay_derived(store, name, replay, seed=seed)
            else:
                r = replay_audit(store, name, replay, data=data, weights=weights, seed=seed, progress=progress)
            if r.labels_differ is not None:
                report.problems.append(r.labels_differ)
            report.replay[name] = r
            if r.first_mismatch is not None:
                s, v = r.first_mismatch
                if r.damaged is not None:
                    report.problems.append(f"replay of {name}: sample {s}, view {v}: {r.damaged}")
                    continue
                how = "not bitwise equal to the stored encoding" if r.same_platform else (
                    f"{r.tolerance_exceeded:.3g}x the tolerance")
                report.problems.append(f"replay of {name}: sample {s}, view {v} differs from the store ({how}; "
                                       f"max |difference| {r.max_abs_diff:.3g})")
    return report


def _with_members(store: Store, names: list[str]) -> list[str]:
    """``names`` and, after them, the members of every derived teacher among them (replayed as well)."""
    out = list(names)
    for name in names:
        out += [m for m in (derivation(store, name) or {}).get("members", []) if m not in out]
    return out


def _teacher(store: Store, name: str, card: TeacherCard, weights: str | None) -> torch.nn.Module:
    """The teacher as recorded, with its checkpoint (possibly moved) checked by SHA-256."""
    path = weights or card.weights
    if card.weights_sha256:
        if not path or not Path(path).is_file():
            raise StoreMismatchError(
                f"teacher {name!r} was run with the checkpoint {card.weights}, which is not there; "
                "pass --weights PATH to where it is now (its SHA-256 must match)")
        if sha256_file(path) != card.weights_sha256:
            raise StoreMismatchError(
                f"{path} is not the checkpoint teacher {name!r} was run with (SHA-256 differs); "
                "pass --weights with the original file")
    model, built = build_teacher(card.spec, card.num_classes, card.in_channels,
                                 path if card.weights_sha256 else None, card.random_init, card.init_seed)
    if built.get("program_sha256") != card.program_sha256:
        raise StoreMismatchError(f"the program {card.spec} is not the one teacher {name!r} was run with "
                                 "(SHA-256 differs); replay needs the original file")
    if card.state_sha256 is not None and built.get("state_sha256") != card.state_sha256:
        raise StoreMismatchError(f"{card.spec} builds another network than the one teacher {name!r} was run with "
                                 "(state SHA-256 differs); replay needs the same code, seed and torch")
    return model


@dataclass(frozen=True)
class _Step:
    """One encoding on the way from the teacher's float32 output to a teacher's stored parts."""

    name: str  # the teacher it wrote (a sample encoding keys its draws by it)
    encoding: encodings.Encoding
    converted: bool  # written by ``kdcache convert`` from the previous step's stored values


def _encoding_chain(store: Store, teacher: str) -> list[_Step]:
    """How ``teacher``'s parts were made: the teacher precompute ran first, then each convert, in order."""
    chain: list[_Step] = []
    name: str | None = teacher
    while name is not None:
        if any(step.name == name for step in chain):
            raise StoreMismatchError(f"teacher {teacher!r} records a cycle of conversions through {name!r}; "
                                     "its card is damaged: re-run the `kdcache convert` that made it")
        card = store.card(name)
        source = card.extra_dict().get("converted_from")
        chain.append(_Step(name, encodings.parse(card.encoding), source is not None))
        if source is not None and (not isinstance(source, str) or source not in store.teacher_names()
                                   or not store.encoding(source).lossless_dense):
            raise StoreMismatchError(
                f"teacher {name!r} was converted from {source!r}, which is no longer a float teacher in "
                f"{store.path}; replay cannot rebuild what convert encoded: verify without --replay, "
                f"or --teacher-name another teacher")
        name = source
    return chain[::-1]


def _replay_parts(chain: list[_Step], logits: np.ndarray, rows: encodings.Rows,
                  num_classes: int) -> dict[str, np.ndarray]:
    """The parts the last teacher of ``chain`` stores for float32 teacher ``logits`` (rows, C).

    The first step encodes the output as precompute does; each convert
    encodes the previous step's stored values (:func:`encode_from_source`).
    """
    parts: dict[str, np.ndarray] = {}
    values = logits
    for step in chain:
        at = encodings.Rows(seed=rows.seed, view=rows.view, samples=rows.samples, teacher=step.name)
        if step.converted:
            parts = encode_from_source(values, step.encoding, at)
        else:  # the teacher precompute ran: its float32 output, encoded
            parts = step.encoding.encode(np.asarray(values, dtype=np.float32), at)
        values = step.encoding.decode(parts, num_classes)  # what the next convert reads (float: as stored)
    return parts


def _slack(chain: list[_Step], logits: np.ndarray) -> np.ndarray:
    """How far, per row, each logit the last teacher of ``chain`` encoded may be from ``logits`` (rows, C).

    Other kernels' float32 round-off (:data:`RELATIVE_SLACK` times the
    row's largest |logit|, or times 1 when that is smaller), and, for a
    converted teacher, the rounding of each float source on the way (half
    an ulp of its dtype at the row's largest magnitude: the source stored
    the other platform's logits rounded).
    """
    top = np.abs(np.asarray(logits, dtype=np.float64)).max(axis=1)
    slack = RELATIVE_SLACK * np.maximum(1.0, top)
    for step in chain[:-1]:  # float sources only (_encoding_chain refuses any other)
        slack = slack + encodings.half_ulp(top + slack, np.dtype(step.encoding.spec))
    return slack


def _rule(chain: list[_Step]) -> str:
    """The off-platform check of the last teacher of ``chain``, as the report states it."""
    via = "".join(f" + half an ulp of {step.encoding.spec} at that magnitude (float source {step.name!r})"
                  for step in chain[:-1])
    return f"{chain[-1].encoding.replay_rule}; slack = {RELATIVE_SLACK:g} x max(1, the row's largest |logit|){via}"


def choose_pairs(rng: np.random.Generator, num_samples: int, num_views: int, pairs: int) -> list[tuple[int, int]]:
    """``pairs`` distinct (sample, view) pairs, at most every pair of the store.

    Drawn (sample, then view) as earlier versions drew them, skipping repeats, so a seed still replays
    the same first pairs; asking for more than the store holds re-runs no row twice.
    """
    want, seen, chosen = min(pairs, num_samples * num_views), set(), []
    while len(chosen) < want:
        pair = (int(rng.integers(num_samples)), int(rng.integers(num_views)))
        if pair not in seen:
            seen.add(pair)
            chosen.append(pair)
    return chosen


def replay_audit(store: Store, teacher: str, pairs: int, *, data: str | None = None, weights: str | None = None,
                 seed: int = 0, progress: bool = False) -> ReplayResult:
    """Re-run the teacher on ``pairs`` distinct random (sample, view) pairs (at most every pair of the
    store) and compare values with the store; ``progress`` shows a bar."""
    card = store.card(teacher)
    chain = _encoding_chain(store, teacher)  # a converted teacher is replayed through its float source
    d = store.dataset
    source = open_data(data or d.spec)
    if source.fingerprint() != d.fingerprint or len(source) != store.num_samples:
        raise StoreMismatchError(
            f"the data at {source.spec} is not the data {store.path} was made from "
            f"(fingerprint {source.fingerprint()} vs {d.fingerprint}); pass --data with the right dataset")
    model = _teacher(store, teacher, card, weights)
    dataset = ViewDataset(source, store.recipe(), store.views.seed, [Render.from_dict(card.render)])
    rng = np.random.default_rng(seed)
    n = store.num_samples
    chosen = choose_pairs(rng, n, store.num_views, pairs)
    micro, grid = card.micro_batch, store.grid
    enc = encodings.parse(card.encoding)
    # The replay runs on the CPU; it is compared with where this teacher was scored.
    now = platform_record("cpu")
    then, source_name = (card.platform, "teacher card") if card.platform else (store.manifest.versions, "manifest")
    platform_diffs = [f"{d.replace(' vs ', ' in the store, ', 1)} here"
                      for d in platform_differences(dict(then), now)]
    if source_name == "manifest":  # old cards: no device recorded; the manifest's versions are all we have
        platform_diffs = [d for d in platform_diffs if not d.startswith(("device", "cuda", "cudnn"))]
    result = ReplayResult(pairs=len(chosen), asked=pairs, max_abs_diff=0.0, argmax_agreement=0.0,
                          same_platform=not platform_diffs, platform_differences=platform_diffs,
                          platform_source=source_name, rule=_rule(chain))
    agree = 0
    stored_labels = store.labels()
    if not np.array_equal(stored_labels, np.asarray(source.labels, dtype=np.int64)):
        result.labels_differ = (f"labels differ from the dataset's labels (first at sample "
                                f"{int(np.argmax(stored_labels != np.asarray(source.labels)))}); re-run the kdcache "
                                "precompute that made the store to rewrite them from the dataset")
    bar = make_progress("pairs", enabled=progress)
    task = bar.add_task(f"replay {teacher}", total=len(chosen), rate="")
    with bar:
        for sample, view in chosen:
            bar.advance(task)
            j = sample // grid.chunk_rows
            chunk_start, chunk_stop = grid.bounds(j)
            params = store.read_params_chunk(view, j)  # the record, never the seed
            r = sample - chunk_start
            stored_parts = {k: p[r : r + 1] for k, p in store.read_encoded_chunk(teacher, view, j).items()}
            # Rebuild the micro-batch the row was scored in: aligned to its chunk start.
            mb_start = chunk_start + ((sample - chunk_start) // micro) * micro
            mb_stop = min(mb_start + micro, chunk_stop)
            x = torch.stack([dataset[(i, view, params[i - chunk_start])]["images"][0] for i in range(mb_start, mb_stop)])
            with teacher_autocast(torch.device("cpu"), card.precision):  # the card's numerics (fp32: none)
                recomputed = run_model(model, x, micro_batch=micro).float()[sample - mb_start].numpy()
            mine = _replay_parts(chain, recomputed[None].astype(np.float32),
                                 encodings.Rows(seed=store.views.seed, view=view, samples=np.array([sample]),
                                                teacher=teacher), card.num_classes)
            agree += compare_row(result, enc, card.num_classes, stored_parts, mine, recomputed[None],
                                 lambda: _slack(chain, recomputed[None]), sample, view)
    result.argmax_agreement = agree / max(1, len(chosen))
    return result


def compare_row(result: ReplayResult, enc: encodings.Encoding, num_classes: int, stored: dict[str, np.ndarray],
                mine: dict[str, np.ndarray], recomputed: np.ndarray, slack: Callable[[], np.ndarray],
                sample: int, view: int) -> bool:
    """Compare one replayed row (``mine``, encoded from ``recomputed`` (1, C)) with the ``stored`` one.

    Folds it into ``result``: bits, the decoded values' largest difference, and off the store's platform
    the encoding's own replay rule at ``slack()`` (evaluated only there); the first failing (sample,
    view) is kept, a row no encoder writes as damaged. Returns whether the argmaxes agree. Shared by
    the replay of a teacher and the re-derivation of an ensemble.
    """
    bitwise = all(mine[k].tobytes() == stored[k].tobytes() for k in mine)
    result.bitwise &= bitwise
    try:  # a row no encoder writes is refused by its decode (and off-platform by its check)
        values = enc.decode(stored, num_classes)[0].astype(np.float64)
        mismatch = 0.0 if result.same_platform else enc.replay_mismatch(stored, recomputed, slack())
    except StoreCorruptError as exc:
        if result.first_mismatch is None:
            result.first_mismatch, result.damaged = (sample, view), str(exc)
        result.tolerance_exceeded = float("inf")
        return False
    ours = enc.decode(mine, num_classes)[0].astype(np.float64)
    result.max_abs_diff = max(result.max_abs_diff, float(np.abs(ours - values).max()))
    result.tolerance_exceeded = max(result.tolerance_exceeded, mismatch)
    bad = not bitwise if result.same_platform else not mismatch <= 1.0  # NaN fails
    if bad and result.first_mismatch is None:
        result.first_mismatch = (sample, view)
    return bool(recomputed[0].argmax() == values.argmax())


def format_verify(report: VerifyReport) -> str:
    """The human summary of a verify run."""
    lines = [f"checked {report.chunks_checked} logit chunk(s) in {report.path}"]
    for name, r in report.replay.items():
        if r.platform_source == "manifest":
            lines.append(f"  teacher {name!r} records no platform (older store): compared with the manifest's "
                         "library versions, recorded when the store was created")
        lines.append(
            f"replay {name}: {r.pairs} (sample, view) pairs"
            + (f" (every pair of the store; {r.asked:,} asked)" if r.asked > r.pairs else "")
            + " re-run from the recorded view parameters; "
            f"max |logit difference| {r.max_abs_diff:.3g}; argmax agreement {r.argmax_agreement:.2%}; "
            + ("bitwise equal" if r.bitwise else "not bitwise equal")
        )
        if not r.same_platform:
            lines.append(
                f"  platform differs from the store's ({'; '.join(r.platform_differences)}): other kernels round "
                f"differently, so bits cannot be expected; checked instead: {r.rule} "
                f"(worst: {r.tolerance_exceeded:.3g}x the tolerance)")
    lines.extend(f"note: {n}" for n in report.notes)
    if report.ok:
        lines.append("OK: every chunk is complete and matches its checksum"
                     + (" and the replay agrees" if report.replay else ""))
    else:
        lines.extend(f"BAD: {p}" for p in report.problems)
    return "\n".join(lines)


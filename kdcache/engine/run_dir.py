"""A run's directory: its files, its record, its one writer, and the checks that make a resume exact.

``kdcache distill`` (and each student of ``kdcache sweep``) writes a run
directory::

    run.json        the record: arguments, identity, inputs' hashes, versions (written once, at creation)
    metrics.jsonl   one row per finished epoch (epochs 1, 2, ... each once)
    steps.jsonl     one row per optimisation step
    checkpoint.pt   the full training state after the last finished epoch
    final.pt        the trained weights, once every epoch is done
    summary.json    the final metrics, once every epoch is done

``kdcache train-teacher`` keeps the same run beside its checkpoint
(``OUT.state.pt``, ``OUT.metrics.jsonl``, ``OUT.steps.jsonl``): see
:meth:`RunDir.beside`.

**One writer.** A run has one writer at a time: the writer holds an exclusive
``flock`` on ``.kdcache-writer.lock`` in the directory (the store's writer
lock, :class:`kdcache.store.WriterLock`) from before it writes anything until
it ends. A second writer, such as a second ``--resume`` of the same run started
by mistake, is refused at once in one line naming the holder (pid and host).
Without the lock, both would append their epochs to one ``metrics.jsonl``.
The kernel drops the lock of a killed process, so a crash never leaves a stale
lock behind.

**Resume.** ``--resume`` continues a run only if it is the same run: equal
identity (the config's fields less those marked ``MAY_CHANGE``, compared after
the caller's normalisation, e.g. resolved loss hyper-parameters), equal data
content and equal teacher inputs by content hash. A refusal names what changed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcache.data import DataSource
from kdcache.engine.config import diff_args
from kdcache.engine.loop import RunFiles
from kdcache.engine.records import read_jsonl, write_json_atomic
from kdcache.errors import ModelError, RunBusyError, RunError, UsageError
from kdcache.models import atomic_torch_save, check_output_width
from kdcache.store.writing import WriterLock
from kdcache.views import Recipe, Render, eval_dataset

log = logging.getLogger(__name__)

LOCK_NAME = ".kdcache-writer.lock"
RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
FINAL = "final.pt"

Normalize = Callable[[dict[str, Any]], dict[str, Any]]
"""Maps a recorded identity to the form two runs are compared in (e.g. loss options resolved)."""

# A changed input names at most this many of its changed fields (a whole other teacher changes many).
_MAX_LISTED = 6


class RunLock(WriterLock):
    """The writer lock of a run (a run directory, a sweep directory, a teacher's checkpoint).

    The store's ``flock`` writer lock with a run's message and error class: refused at once with
    :class:`~kdcache.errors.RunBusyError` (exit 1, as a busy store) naming the holder.
    """

    def __init__(self, directory: Path, name: str = LOCK_NAME, what: str | None = None) -> None:
        super().__init__(directory, name)
        self.what = what or str(directory)

    def busy(self, holder: str) -> Exception:
        return RunBusyError(f"{self.what} is being written by another kdcache process (pid {holder}); "
                            "wait for it to finish or stop it, then run again")

    def acquired(self) -> None:
        """Nothing to clean up: a run's files are replaced atomically."""


class RunDir:
    """The files of one run and its writer lock (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], files: RunFiles | None = None,
                 lock: RunLock | None = None) -> None:
        self.path = Path(path)
        self.files = files or RunFiles(state=self.path / "checkpoint.pt", metrics=self.path / METRICS,
                                       steps=self.path / "steps.jsonl")
        self.lock = lock or RunLock(self.path)
        self._held = False

    @classmethod
    def beside(cls, checkpoint: str | os.PathLike[str]) -> RunDir:
        """The run that trains ``checkpoint`` (train-teacher): its state, logs and lock lie beside it."""
        out = Path(checkpoint)
        files = RunFiles(state=out.with_name(out.name + ".state.pt"),
                         metrics=out.with_name(out.name + ".metrics.jsonl"),
                         steps=out.with_name(out.name + ".steps.jsonl"))
        return cls(out.parent, files, RunLock(out.parent, f".{out.name}.lock", what=str(out)))

    @property
    def record_path(self) -> Path:
        return self.path / RUN_JSON

    # -- writing -----------------------------------------------------------------------------

    def check_new(self, command: str = "distill") -> None:
        """Refuse a path where a new run would mix with other files (before anything is written)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path} is a file; {command} writes a run directory, give a directory path")
        if self.path.exists() and any(p.name != LOCK_NAME for p in self.path.iterdir()):
            raise RunError(f"{self.path} already holds files; pass --resume to continue that run, "
                           "or choose a new --out")

    def acquire(self) -> None:
        """Become the run's one writer (creating its directory), or raise RunBusyError naming the holder."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self.lock.release()
            self._held = False

    def open(self, record: dict[str, Any], resume: bool, same: Normalize | None = None) -> RunDir:
        """Become the writer of a new run (its directory and ``run.json``) or of the run to resume.

        A new run is refused where files are already; a resumed one unless it is the same run
        (:meth:`check_resume`). On a refusal the lock is released and nothing was written.
        """
        if not resume:
            self.check_new()
        elif not self.record_path.exists():
            self.check_resumable()
        self.acquire()
        try:
            if resume:
                self.check_resume(record, same)
            else:
                self.check_new()  # again, as the writer: another run may have started here meanwhile
                write_json_atomic(self.record_path, record)
        except BaseException:
            self.release()
            raise
        return self

    def close(self) -> None:
        self.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_final(self, weights: dict[str, torch.Tensor], summary: dict[str, Any]) -> None:
        """``final.pt`` and ``summary.json``, atomically, once every epoch is trained."""
        atomic_torch_save(self.path / FINAL, weights)
        write_json_atomic(self.path / SUMMARY, summary)

    # -- reading -----------------------------------------------------------------------------

    def check_resumable(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path} is a file; distill writes a run directory, give a directory path")
        if not self.record_path.exists():
            raise RunError(f"--resume: {self.path} holds no run to resume (no run.json); drop --resume to start one")

    def read_record(self) -> dict[str, Any]:
        """The run's ``run.json``, or one :class:`RunError` line saying why it cannot be read."""
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.record_path}: cannot be read as JSON ({type(exc).__name__}); "
                           "is this a kdcache run directory?") from None
        if not isinstance(record, dict):
            raise RunError(f"{self.record_path}: expected a JSON object; is this a kdcache run directory?")
        return record

    def check_resume(self, record: dict[str, Any], same: Normalize | None = None) -> None:
        """Refuse, in one line naming what changed, a ``--resume`` that would not continue this run."""
        self.check_resumable()
        try:
            previous = json.loads(self.record_path.read_text())
        except ValueError:
            raise RunError(f"--resume: {self.record_path} is corrupted (not JSON); this run cannot be continued "
                           "exactly, start a new run with another --out") from None
        if not isinstance(previous, dict) or "identity" not in previous:
            raise RunError(f"--resume: {self.path} was started by an older kdcache and cannot be continued "
                           "exactly; start a new run with another --out")
        norm = same or (lambda ident: ident)
        diffs = diff_args(norm(previous["identity"]), norm(record["identity"]))
        if diffs:
            raise RunError(f"--resume with different arguments than the run in {self.path} ({'; '.join(diffs)})")
        changed = [k for k in ("data_fingerprint", "val_data_fingerprint") if previous.get(k) != record.get(k)]
        if changed:
            raise RunError(f"--resume: the data of the run in {self.path} changed under the same spec "
                           f"({', '.join(changed)} differs); restore that data to continue, or start a new run "
                           "with another --out")
        # What the run reads beside its data (a store, a teacher), compared by content hash.
        for key in sorted(k for k in {*previous, *record} if k.endswith("_input_hash")):
            if previous.get(key) != record.get(key):
                raise RunError(f"--resume: the teacher data this run reads changed since the run in {self.path} "
                               f"started ({_input_changes(previous, record, key.removesuffix('_hash'))}); "
                               "start a new run with another --out")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows of ``metrics.jsonl``, refused in one line unless each epoch is there once.

        A run has one writer, so its epochs are 1, 2, ... in order; a repeated or out-of-order epoch
        means two processes wrote the run at once (a kdcache without the run lock), and its records
        cannot be trusted.
        """
        path = self.files.metrics
        rows: list[dict[str, Any]] = []
        lines = path.read_text().splitlines(keepends=True)
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                int(row["epoch"]), float(row["val_top1"])
            except (ValueError, KeyError, TypeError):
                if n == len(lines) and not line.endswith("\n"):
                    break  # the torn tail of an append in progress
                raise RunError(f"{path}: line {n} is not an epoch record with epoch and val_top1") from None
            rows.append(row)
        epochs = [int(r["epoch"]) for r in rows]
        if epochs != list(range(1, len(epochs) + 1)):
            repeated = sorted({e for e in epochs if epochs.count(e) > 1})
            what = (f"repeats epoch(s) {', '.join(map(str, repeated))}" if repeated
                    else f"holds epochs {epochs}, not 1, 2, ... in order")
            raise RunError(f"{path} {what}: two processes wrote this run at once, so its records cannot be "
                           "trusted; train it again into a new --out")
        return rows

    def steps(self) -> list[dict[str, Any]]:
        return read_jsonl(self.files.steps)




def _input_changes(previous: dict[str, Any], record: dict[str, Any], key: str) -> str:
    """The fields of input ``key`` (store_input, teacher_input) that changed, or the kinds that may have
    (a run recorded by an older kdcache holds only the hash)."""
    if isinstance(previous.get(key), dict) and isinstance(record.get(key), dict):
        # Named fields as `field: then -> now`; the chunk checksums (one hash of them all) last, in words.
        changed = diff_args({k: v for k, v in previous[key].items() if k != "chunks"},
                            {k: v for k, v in record[key].items() if k != "chunks"})
        if previous[key].get("chunks") != record[key].get("chunks"):
            changed.append("the logits' or views' chunk checksums")
        if changed:
            more = len(changed) - _MAX_LISTED
            return "; ".join(changed[:_MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
    return "other views, logits, statistics or teacher weights"


# -- the validation data of a run ----------------------------------------------------------------


def check_val_classes(source: DataSource, val_source: DataSource) -> None:
    """Refuse a validation set with another number of classes than the training data (exit 2)."""
    if val_source.num_classes != source.num_classes:
        raise UsageError(f"--val-data has {val_source.num_classes} classes but --data has {source.num_classes}")


def check_val_images(model: nn.Module, val_source: DataSource, recipe: Recipe, render: Render,
                     in_channels: int, num_classes: int, role: str) -> None:
    """Refuse, before the first step, validation images the trained ``model`` cannot take (exit 2).

    One validation sample is rendered exactly as evaluation renders it, and ``model`` runs one
    forward pass of that shape in eval mode (nothing trains, no random number is drawn): another
    channel count, or a size a fixed-size model does not take, is one line naming both shapes
    instead of a traceback after a whole epoch.
    """
    if len(val_source) == 0:
        return
    image = eval_dataset(val_source, recipe, render)[0]["images"][0]
    c, h, w = image.shape
    hint = ("; give validation data of the training data's kind"
            + (f" (channels={in_channels} in an imagefolder spec)" if val_source.name == "imagefolder" else ""))
    if c != in_channels:
        raise UsageError(f"--val-data {val_source.spec} gives {c}-channel images but the {role} takes "
                         f"{in_channels}-channel images, as --data gives{hint}")
    was_training = model.training
    model.eval()
    try:
        check_output_width(model, c, (h, w), num_classes, micro_batch=2, role=role)
    except ModelError as exc:
        raise UsageError(f"--val-data {val_source.spec} gives {c}x{h}x{w} images, which the {role} "
                         f"trained on --data cannot take ({exc}){hint}") from None
    finally:
        model.train(was_training)

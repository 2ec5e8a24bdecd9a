"""``kdcache info`` and ``kdcache verify``: what is in a store, and is it intact.

``verify`` checks every chunk's completion record and checksum, and with
``replay`` re-runs the teacher on a few (sample, view) pairs: the replay
renders the whole teacher micro-batch holding each pair, exactly as
precompute did, so on the same machine an intact store agrees bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcache.data import open_data
from kdcache.errors import StoreMismatchError
from kdcache.models import build_model, run_model, sha256_file
from kdcache.store import Store, checksum, dir_size, library_versions
from kdcache.views import Render, ViewDataset, Recipe


def store_info(path: str | Path) -> dict[str, Any]:
    """Everything a user wants to know about a store, as JSON-able data."""
    store = Store.open(path)
    teachers = {}
    for name, card in store.manifest["teachers"].items():
        logits = store.logits(name)
        stats_key = store.stats_group_path(name)
        stats: dict[str, Any] = {}
        if store.has_array(stats_key):
            for key, arr in store.group[stats_key].arrays():
                stats[key] = {"shape": list(arr.shape), "dtype": str(arr.dtype), **dict(arr.attrs)}
        teachers[name] = {
            **card,
            "logits": {"shape": list(logits.shape), "dtype": str(logits.dtype), "chunks": list(logits.chunks)},
            "bytes_on_disk": dir_size(store.path / "teachers" / name / "logits"),
            "stats": stats,
        }
    m = store.manifest
    return {
        "path": str(store.path),
        "format_version": m["format_version"],
        "status": m["status"],
        "created": m["created"],
        "updated": m["updated"],
        "versions": m["versions"],
        "dataset": m["dataset"],
        "views": {k: v for k, v in m["views"].items() if k != "recipe"} | {"recipe_name": m["views"]["recipe"]["name"]},
        "recipe": m["views"]["recipe"],
        "teachers": teachers,
        "bytes_on_disk": store.disk_bytes(),
    }


def format_info(info: dict[str, Any]) -> str:
    """The human view of :func:`store_info`."""
    d, v = info["dataset"], info["views"]
    lines = [
        f"store      {info['path']}  (format v{info['format_version']}, {info['status']})",
        f"dataset    {d['spec']}  {d['num_samples']:,} samples, {d['num_classes']} classes",
        f"           fingerprint {d['fingerprint']}",
        f"views      {v['num_views']} views, seed {v['seed']}, recipe {v['recipe_name']} ({v['recipe_hash'][:19]}...)",
        f"           {v['chunk_rows']:,} rows per chunk; params: {', '.join(v['param_names']) or 'none'}",
        f"size       {info['bytes_on_disk'] / 1e6:.2f} MB on disk",
    ]
    for name, t in info["teachers"].items():
        acc = t.get("accuracy_per_view")
        acc_text = f", mean accuracy {np.mean(acc):.2%}" if acc else ""
        lines.append(
            f"teacher    {name}: {t['spec']} [{t['status']}] logits {tuple(t['logits']['shape'])} "
            f"{t['encoding']} ({t['codec']}), {t['bytes_on_disk'] / 1e6:.2f} MB{acc_text}"
        )
        if t.get("weights_sha256"):
            lines.append(f"           weights sha256 {t['weights_sha256']}")
        trained = t.get("trained")
        if isinstance(trained, dict):
            how = trained.get("loss", "?")
            if trained.get("regt_beta") is not None:
                how = f"RegT(beta={trained['regt_beta']:g})"
            elif trained.get("label_smoothing"):
                how = f"label smoothing {trained['label_smoothing']:g}"
            top1 = trained.get("val_top1")
            lines.append(
                f"           trained with {how}, {trained.get('epochs', '?')} epochs on {trained.get('data', '?')}"
                + (f", val top-1 {top1:.2%}" if isinstance(top1, float) else "")
            )
        elif trained:
            lines.append(f"           trained: {trained}")
        if t["stats"]:
            for key, s in t["stats"].items():
                extra = {k: val for k, val in s.items() if k not in ("shape", "dtype")}
                lines.append(f"           stats/{key} {tuple(s['shape'])} {s['dtype']} {extra if extra else ''}")
        else:
            lines.append(f"           no statistics (run `kdcache stats {info['path']}`)")
    return "\n".join(lines)


@dataclass
class ReplayResult:
    pairs: int
    max_abs_diff: float
    argmax_agreement: float
    params_match: bool
    same_platform: bool = True  # torch version and CPU instruction set as when the store was written


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_store`; ``ok`` is what the exit code says."""

    path: Path
    chunks_checked: int = 0
    problems: list[str] = field(default_factory=list)
    replay: dict[str, ReplayResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(
    path: str | Path,
    *,
    replay: int = 0,
    teacher: str | None = None,
    data: str | None = None,
    weights: str | None = None,
    seed: int = 0,
) -> VerifyReport:
    """Check completeness and checksums of every chunk; optionally replay ``replay`` pairs.

    ``data`` and ``weights`` override where the dataset and the teacher's
    checkpoint are found (a store moved to another machine); both are checked
    against the fingerprint and SHA-256 recorded in the store.
    """
    store = Store.open(path)
    report = VerifyReport(path=store.path)
    grid = store.grid
    names = [store.resolve_teacher(teacher)] if teacher else store.teacher_names()
    view_sums = np.asarray(store.view_checksums()[:])
    for v, j in store.iter_chunks():
        if view_sums[v, j] == 0:
            report.problems.append(f"views/params view {v} chunk {j} (rows {grid.bounds(j)}) was never written")
        elif checksum(store.read_params_chunk(v, j)) != int(view_sums[v, j]):
            report.problems.append(f"views/params view {v} chunk {j} (rows {grid.bounds(j)}): checksum mismatch")
    for name in names:
        sums = np.asarray(store.logit_checksums(name)[:])
        for v, j in store.iter_chunks():
            report.chunks_checked += 1
            where = f"teachers/{name}/logits view {v} chunk {j} (rows {grid.bounds(j)[0]}-{grid.bounds(j)[1] - 1})"
            if sums[v, j] == 0:
                report.problems.append(f"{where} was never written (interrupted run?)")
                continue
            try:
                chunk = store.read_logits_chunk(name, v, j)
            except (ValueError, OSError, RuntimeError) as exc:  # undecodable bytes
                report.problems.append(f"{where} cannot be read: {exc}")
                continue
            if checksum(chunk) != int(sums[v, j]):
                report.problems.append(f"{where}: checksum mismatch (corrupted)")
            elif not np.isfinite(chunk).all():
                report.problems.append(f"{where}: holds NaN/Inf")
        if store.teacher_card(name)["status"] != "complete":
            report.problems.append(f"teacher {name} is not complete (status {store.teacher_card(name)['status']})")
    if replay > 0:
        for name in names:
            report.replay[name] = replay_audit(store, name, replay, data=data, weights=weights, seed=seed)
            r = report.replay[name]
            if r.argmax_agreement < 1.0 or not r.params_match:
                report.problems.append(
                    f"replay of {name}: argmax agreement {r.argmax_agreement:.2%}, params match {r.params_match}"
                )
    return report


def replay_audit(
    store: Store, teacher: str, pairs: int, *, data: str | None = None, weights: str | None = None, seed: int = 0
) -> ReplayResult:
    """Re-run the teacher on ``pairs`` random (sample, view) pairs and compare with the store."""
    m = store.manifest
    card = store.teacher_card(teacher)
    source = open_data(data or m["dataset"]["spec"])
    if source.fingerprint() != m["dataset"]["fingerprint"] or len(source) != store.num_samples:
        raise StoreMismatchError(
            f"the data at {source.spec} is not the data {store.path} was made from "
            f"(fingerprint {source.fingerprint()} vs {m['dataset']['fingerprint']}); pass --data with the right dataset"
        )
    weights_path = weights or card.get("weights")
    if card.get("weights_sha256") and weights_path and sha256_file(weights_path) != card["weights_sha256"]:
        raise StoreMismatchError(
            f"{weights_path} is not the checkpoint teacher {teacher!r} was run with (SHA-256 differs); "
            "pass --weights with the original file"
        )
    model, _ = build_model(card["spec"], card["num_classes"], card["in_channels"], weights_path, bool(card.get("random_init")))
    recipe = Recipe.from_dict(m["views"]["recipe"])
    render = Render.from_dict(card["render"])
    dataset = ViewDataset(source, recipe, int(m["views"]["seed"]), [render])
    rng = np.random.default_rng(seed)
    n = store.num_samples
    chosen = [(int(rng.integers(n)), int(rng.integers(store.num_views))) for _ in range(pairs)]
    micro = int(card["micro_batch"])
    grid = store.grid
    logits_arr = store.logits(teacher)
    dtype = np.dtype(logits_arr.dtype)
    max_diff, agree, params_ok = 0.0, 0, True
    for sample, view in chosen:
        # Rebuild the micro-batch the row was scored in: aligned to its chunk start.
        chunk_start = grid.bounds(sample // grid.chunk_rows)[0]
        mb_start = chunk_start + ((sample - chunk_start) // micro) * micro
        mb_stop = min(mb_start + micro, grid.bounds(sample // grid.chunk_rows)[1])
        items = [dataset[(i, view)] for i in range(mb_start, mb_stop)]
        x = torch.stack([it["images"][0] for it in items])
        recomputed = run_model(model, x, micro_batch=micro)[sample - mb_start].numpy()
        stored = np.asarray(logits_arr[view, sample], dtype=np.float32)
        encoded = recomputed.astype(dtype).astype(np.float32)
        max_diff = max(max_diff, float(np.abs(encoded - stored).max()))
        agree += int(recomputed.argmax() == stored.argmax())
        stored_params = np.asarray(store.params()[view, sample])
        params_ok &= bool(np.array_equal(stored_params.reshape(-1), items[sample - mb_start]["params"].numpy().reshape(-1)))
    now, then = library_versions(), m["versions"]
    same = all(now.get(k) == then.get(k) for k in ("torch", "cpu_capability", "machine"))
    return ReplayResult(pairs=len(chosen), max_abs_diff=max_diff, argmax_agreement=agree / max(1, len(chosen)),
                        params_match=params_ok, same_platform=same)


def format_verify(report: VerifyReport) -> str:
    """The human summary of a verify run."""
    lines = [f"checked {report.chunks_checked} logit chunk(s) in {report.path}"]
    for name, r in report.replay.items():
        lines.append(
            f"replay {name}: {r.pairs} (sample, view) pairs re-run; max |logit difference| "
            f"{r.max_abs_diff:.3g}; argmax agreement {r.argmax_agreement:.2%}; "
            f"view parameters {'match' if r.params_match else 'DIFFER'}"
        )
        if not r.same_platform:
            lines.append("  (torch or CPU instruction set differ from the store's: expect round-off, not bitwise, agreement)")
    if report.ok:
        lines.append("OK: every chunk is complete and matches its checksum")
    else:
        lines.extend(f"BAD: {p}" for p in report.problems)
    return "\n".join(lines)

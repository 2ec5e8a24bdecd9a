"""``kdcache distill``: train a student from cached teacher logits (or, online, from a live teacher).

The student sees its own rendering of exactly the view the teacher scored
(same seed, sample and view), so training from the store is the same
computation as training with the teacher present, without running it. The
loss is looked up in :mod:`kdcache.losses`; what it needs beyond (student,
teacher, labels) is read from its :class:`~kdcache.losses.LossSpec`: store
statistics, the epoch, extra trainable networks. There are no per-method
branches here.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from kdcache import __version__, losses
from kdcache.data import open_data
from kdcache.errors import KdcacheError, RunError
from kdcache.loader import DEFAULT_WINDOW, VIEW_POLICIES, epoch_plan
from kdcache.logit_sources import (  # noqa: F401 - check_store_matches_data re-exported
    CachedLogits,
    LogitSource,
    OnlineLogits,
    check_store_matches_data,
)
from kdcache.models import atomic_torch_save, build_model
from kdcache.prefetch import prefetch
from kdcache.progress import console, make_progress, rate_text
from kdcache.store import library_versions
from kdcache.training import (
    OptimConfig,
    append_metrics,
    canonical_hash,
    eval_loader,
    evaluate,
    make_optimizer,
    make_scheduler,
    prepare_run_dir,
    seed_everything,
    truncate_metrics,
    write_json_atomic,
)
from kdcache.views import ViewDataset

# Arguments a --resume must repeat exactly (the rest, e.g. --workers, may change).
RESUME_KEYS = (
    "store", "teacher", "teacher_name", "weights", "views", "recipe", "data", "val_data", "student",
    "loss", "loss_opts", "epochs", "batch_size", "optim", "seed", "view_policy", "window",
)


@dataclass
class DistillConfig:
    """Everything one distill run depends on (recorded in ``RUN_DIR/run.json``)."""

    data: str
    val_data: str
    student: str
    loss: str
    epochs: int
    out: Path
    store: str | None = None
    teacher_name: str | None = None
    teacher: str | None = None  # online mode
    weights: str | None = None
    views: int | None = None
    recipe: str | None = None
    loss_opts: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 128
    workers: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    view_policy: str = "cycle"
    window: int = DEFAULT_WINDOW
    resume: bool = False
    device: str = "cpu"
    micro_batch: int = 64


@dataclass
class DistillResult:
    out: Path
    metrics: list[dict[str, Any]]
    seconds: float

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


def parse_loss_opts(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings to a dict; values are JSON when they parse (numbers, lists, true)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KdcacheError(f"--loss-opt {item!r} must look like key=value, e.g. temperature=4")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _record(cfg: DistillConfig, teacher: LogitSource, student_card: dict[str, Any], manifest_hash: str | None,
            input_hash: str | None) -> dict:
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    args.pop("resume")
    return {
        "kind": "kdcache-distill",
        "args": args,
        "store_manifest_hash": manifest_hash,
        "store_input_hash": input_hash,
        "teacher": teacher.card,
        "student": student_card,
        "versions": library_versions(),
        "kdcache": __version__,
    }


def distill(cfg: DistillConfig, progress: bool = True) -> DistillResult:
    """Train a student with ``cfg.loss`` from a store (or a live teacher); see the module docstring."""
    if (cfg.store is None) == (cfg.teacher is None):
        raise KdcacheError("give either --store STORE (cached) or --teacher SPEC (online), not both or neither")
    if cfg.view_policy not in VIEW_POLICIES:
        raise KdcacheError(f"--view-policy must be one of {', '.join(VIEW_POLICIES)}")
    if cfg.batch_size < 1:
        raise KdcacheError("--batch-size must be at least 1")
    cfg.optim.check()
    spec = losses.spec(cfg.loss)
    hparams = spec.resolve(cfg.loss_opts)
    device = torch.device(cfg.device)
    seed_everything(cfg.seed)

    source = open_data(cfg.data)
    val_source = open_data(cfg.val_data)
    if val_source.num_classes != source.num_classes:
        raise KdcacheError(
            f"--val-data has {val_source.num_classes} classes but --data has {source.num_classes}"
        )
    teacher: LogitSource
    if cfg.store is not None:
        cached = CachedLogits(cfg.store, cfg.teacher_name, source, spec, hparams)
        teacher = cached
        manifest_hash: str | None = canonical_hash(cached.store.manifest)
        input_hash: str | None = cached.input_hash()
    else:
        teacher = OnlineLogits(cfg, source, device)
        if spec.store_stats(hparams) and any(k != "tau_star" for k in spec.store_stats(hparams)):
            raise KdcacheError(
                f"loss {cfg.loss!r} needs statistics precomputed over the whole training set; "
                "use a store (kdcache precompute, then kdcache stats)"
            )
        manifest_hash = input_hash = None

    student_render = teacher.render
    in_channels = student_render.channels or source.channels
    student, student_card = build_model(cfg.student, source.num_classes, in_channels)
    student = student.to(device).train()
    extras: list[nn.Module] = []
    for _ in range(spec.extra_networks):
        net, _card = build_model(teacher.card["spec"], source.num_classes, teacher.card.get("in_channels", in_channels))
        extras.append(net.to(device).train())
    params = list(student.parameters())
    optimizers = [make_optimizer(params, cfg.optim)] + [make_optimizer(n.parameters(), cfg.optim) for n in extras]
    schedulers = [make_scheduler(o, cfg.optim) for o in optimizers]

    out = Path(cfg.out)
    record = _record(cfg, teacher, student_card, manifest_hash, input_hash)
    prepare_run_dir(out, record, cfg.resume, RESUME_KEYS)
    start_epoch = 1
    ckpt_path = out / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    if cfg.resume:
        if record["store_input_hash"] != json.loads((out / "run.json").read_text()).get("store_input_hash"):
            raise RunError(
                f"--resume: the teacher data this run reads from the store changed since the run in {out} "
                "started (other views, logits or statistics); start a new run with another --out"
            )
        if ckpt_path.exists():
            state = torch.load(ckpt_path, weights_only=True, map_location="cpu")
            student.load_state_dict(state["student"])
            for net, sd in zip(extras, state["extras"]):
                net.load_state_dict(sd)
            for opt, sd in zip(optimizers, state["optimizers"]):
                opt.load_state_dict(sd)
            torch.set_rng_state(state["torch_rng"])
            start_epoch = int(state["epoch"]) + 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # stepping schedulers without optimizer steps, on purpose
                for sched in schedulers:
                    for _ in range(start_epoch - 1):
                        sched.step()
        history = truncate_metrics(out / "metrics.jsonl", start_epoch - 1)
        truncate_metrics(out / "steps.jsonl", start_epoch - 1)
        if start_epoch > cfg.epochs:
            console.print(f"{out}: all {cfg.epochs} epochs already done")

    fn = spec.fn
    renders = teacher.renders(student_render)
    dataset = ViewDataset(source, teacher.recipe, teacher.seed, renders)
    val = eval_loader(val_source, student_render, max(cfg.batch_size, 256), cfg.workers)
    t_start = time.perf_counter()
    with make_progress(enabled=progress) as bar:
        for epoch in range(start_epoch, cfg.epochs + 1):
            plan = epoch_plan(cfg.seed, epoch, len(source), teacher.num_views, cfg.view_policy, cfg.window)
            batches = plan.batches(cfg.batch_size)
            loader = DataLoader(dataset, batch_sampler=batches, num_workers=cfg.workers,
                                pin_memory=device.type == "cuda")
            rows_iter = teacher.epoch_rows(plan, cfg.batch_size)
            task = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=len(source), rate="")
            sums: dict[str, float] = {}
            step_losses: list[float] = []
            seen = 0
            t0 = time.perf_counter()
            for batch in (loader if cfg.workers else prefetch(loader)):
                rows = next(rows_iter) if rows_iter is not None else None
                x = batch["images"][0].to(device, non_blocking=True)
                y = batch["label"].to(device, non_blocking=True)
                t_logits = teacher.logits(batch, rows).to(device, non_blocking=True)
                kwargs: dict[str, Any] = {k: v.to(device) if torch.is_tensor(v) else v
                                          for k, v in teacher.call_inputs(rows).items()}
                if spec.needs_epoch:
                    kwargs["epoch"] = epoch
                if extras:
                    kwargs[spec.extra_networks_arg] = [net(x) for net in extras]
                parts = fn(student(x), t_logits, y, **hparams, **kwargs)
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                parts["loss"].backward()
                for opt in optimizers:
                    opt.step()
                n = int(y.shape[0])
                seen += n
                step_losses.append(float(parts["loss"].detach()))
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach()) * n
                bar.update(task, advance=n, rate=rate_text(seen, time.perf_counter() - t0, "samples"))
            train_seconds = time.perf_counter() - t0
            lr = optimizers[0].param_groups[0]["lr"]
            for sched in schedulers:
                sched.step()
            row = {
                "epoch": epoch,
                "train_loss": sums.get("loss", 0.0) / max(1, seen),
                **{f"train_{k}": v / max(1, seen) for k, v in sums.items() if k != "loss"},
                **evaluate(student, val, device),
                "lr": lr,
                "samples_per_s": seen / train_seconds if train_seconds > 0 else None,
                "epoch_seconds": train_seconds,
            }
            student.train()
            history.append(row)
            append_metrics(out / "metrics.jsonl", row)
            # Per-step losses (loss curves; the cached-vs-online equivalence is checked on them).
            with (out / "steps.jsonl").open("a") as f:
                f.writelines(json.dumps({"epoch": epoch, "step": i, "loss": v}) + "\n"
                             for i, v in enumerate(step_losses))
            # Logs first, checkpoint last: a resume truncates logs to the checkpoint's epoch.
            atomic_torch_save(ckpt_path, {
                "epoch": epoch,
                "student": student.state_dict(),
                "extras": [net.state_dict() for net in extras],
                "optimizers": [opt.state_dict() for opt in optimizers],
                "torch_rng": torch.get_rng_state(),
            })
            bar.remove_task(task)
            if progress:
                console.print(
                    f"epoch {epoch}: loss {row['train_loss']:.4f}  val top-1 {row['val_top1']:.2%}  "
                    f"top-5 {row['val_top5']:.2%}  {row['samples_per_s']:,.0f} samples/s"
                )
    torch.save(student.state_dict(), out / "final.pt")
    result = DistillResult(out=out, metrics=history, seconds=time.perf_counter() - t_start)
    write_json_atomic(out / "summary.json", {"final": result.final, "seconds": result.seconds})
    return result


def format_result(result: DistillResult) -> str:
    """The human summary at the end of ``kdcache distill``."""
    f = result.final
    if not f:
        return f"{result.out}: no epoch was run"
    return (
        f"run {result.out}: {f['epoch']} epochs; final val top-1 {f['val_top1']:.2%}, top-5 {f['val_top5']:.2%}; "
        f"{f['samples_per_s']:,.0f} samples/s; weights in {result.out / 'final.pt'}, "
        f"metrics in {result.out / 'metrics.jsonl'}"
    )

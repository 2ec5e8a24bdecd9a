"""kdcache's Typer app. Each command parses its options and makes one library call.

Exit codes (see :mod:`kdcache_cli.exits`): 0 ok, 1 a kdcache error or an OS
condition (one line), 2 a usage error, 130 interrupted (with how to resume).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kdcache_cli.exits import handle_errors, usage_fail

app = typer.Typer(
    name="kdcache",
    help="Run a teacher once over replayable augmented views, cache its logits in a zarr store, "
    "and distill any number of students from the store.\n\n"
    "Start with `kdcache quickstart`, then see `kdcache COMMAND --help`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="Dataset spec: fashion-mnist[:ROOT][,split=train|test], cifar10:ROOT, cifar100:ROOT, "
        "imagefolder:ROOT, digits, embedded, synthetic:samples=N,classes=C,size=S,channels=K,seed=R.",
    ),
]


@app.command(
    epilog="Example:\n\n"
    "    kdcache precompute --data embedded --teacher kdcache:cnn_small --weights teacher.pt "
    "--views 4 --seed 0 --out store.zarr\n\n"
    "Interrupted? Run the same command again: it resumes from the completed chunks."
)
@handle_errors
def precompute(
    data: DataOpt,
    teacher: Annotated[
        list[str],
        typer.Option(help="Teacher spec (repeatable): torchvision:NAME, kdcache:NAME, "
                     "import:module:factory, torchscript:PATH, export:PATH."),
    ],
    out: Annotated[Path, typer.Option(help="Store directory to create, resume, or add a teacher to.")],
    views: Annotated[int, typer.Option(help="Augmented views per sample.")] = 4,
    seed: Annotated[int, typer.Option(help="Store seed; every view derives from (seed, sample, view).")] = 0,
    weights: Annotated[
        Optional[list[str]],
        typer.Option(help="Checkpoint per --teacher, in the same order (loaded with weights_only=True)."),
    ] = None,
    teacher_name: Annotated[
        Optional[list[str]], typer.Option(help="Name in the store per --teacher (default: from the spec).")
    ] = None,
    recipe: Annotated[str, typer.Option(help="Augmentation recipe: a preset (cifar, imagenet, "
                                             "fashion-mnist, none) or a JSON file.")] = "fashion-mnist",
    batch_size: Annotated[int, typer.Option(help="Rows per teacher batch (rounded to the micro-batch).")] = 256,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes rendering views.")] = 0,
    encoding: Annotated[str, typer.Option(help="float16 (default, half the bytes) or float32 (exact).")] = "float16",
    codec: Annotated[str, typer.Option(help="none (fastest), zstd or blosc-zstd (smaller, slower).")] = "none",
    chunk_rows: Annotated[Optional[int], typer.Option(help="Rows per chunk (default: ~4 MB chunks).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Run each teacher **once** over every (view, sample) and store its raw logits."""
    from kdcache.precompute import TeacherRequest, format_summary, precompute as run

    weights = weights or []
    names = teacher_name or []
    if len(weights) > len(teacher) or len(names) > len(teacher):
        usage_fail("give at most one --weights and one --teacher-name per --teacher")
    requests = [
        TeacherRequest(spec, weights[i] if i < len(weights) else None, names[i] if i < len(names) else None)
        for i, spec in enumerate(teacher)
    ]
    result = run(
        data=data, teachers=requests, views=views, seed=seed, out=out, recipe=recipe, batch_size=batch_size,
        workers=workers, encoding=encoding, codec=codec, chunk_rows=chunk_rows, device=device,
        progress=True,
    )
    typer.echo(format_summary(result))


@app.command(epilog="Example:\n\n    kdcache info store.zarr\n\n    kdcache info store.zarr --json")
@handle_errors
def info(
    store: Annotated[Path, typer.Argument(help="Store directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full description as JSON.")] = False,
) -> None:
    """Show what is in a store: dataset, fingerprint, views, recipe, teachers, statistics, sizes."""
    from kdcache.audit import format_info, store_info

    description = store_info(store)
    typer.echo(json.dumps(description, indent=2) if as_json else format_info(description))


@app.command(epilog="Example:\n\n    kdcache verify store.zarr --replay 16")
@handle_errors
def verify(
    store: Annotated[Path, typer.Argument(help="Store directory.")],
    replay: Annotated[int, typer.Option(help="Re-run the teacher on N random (sample, view) pairs.")] = 0,
    teacher: Annotated[Optional[str], typer.Option(help="Check only this teacher.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Dataset spec, if not where the store says.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="Teacher checkpoint, if not where the store says.")] = None,
) -> None:
    """Check every chunk's completion and checksum; with --replay, audit the teacher's logits.

    Exits 1 and names the bad chunk when anything is wrong.
    """
    from kdcache.audit import format_verify, verify_store

    report = verify_store(store, replay=replay, teacher=teacher, data=data, weights=weights)
    typer.echo(format_verify(report))
    if not report.ok:
        raise typer.Exit(1)


StoreArg = Annotated[Path, typer.Argument(help="Store directory.")]


@app.command(epilog="Example:\n\n    kdcache stats store.zarr --tau0 3 --tau0 2")
@handle_errors
def stats(
    store: StoreArg,
    teacher: Annotated[Optional[str], typer.Option(help="Teacher name (default: the only one).")] = None,
    tau0: Annotated[Optional[list[float]], typer.Option(help="FGCR class-table temperature (repeatable; "
                                                        "default 3 = FGCR's default tau-1).")] = None,
    grid: Annotated[str, typer.Option(help="ISATS temperature grid, comma-separated.")] = "1,2,3,4,5,6,8",
) -> None:
    """Compute ISATS tau*, FGCR class tables and teacher accuracy once, into the store."""
    from kdcache.stats import compute_stats, format_stats

    try:
        grid_values = [float(g) for g in grid.split(",") if g.strip()]
    except ValueError:
        usage_fail(f"--grid {grid!r} must be comma-separated numbers, e.g. 1,2,3,4,5,6,8")
    result = compute_stats(store, teacher=teacher, tau0=tau0 or [3.0], grid=grid_values)
    typer.echo(format_stats(result))


def _optim(optimizer: str, lr: float, momentum: float, weight_decay: float, schedule: str, epochs: int) -> Any:
    from kdcache.training import OptimConfig

    return OptimConfig(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                       schedule=schedule, epochs=epochs)


ValDataOpt = Annotated[str, typer.Option("--val-data", help="Validation dataset spec (evaluated every epoch).")]
EpochsOpt = Annotated[int, typer.Option(help="Training epochs.")]
LrOpt = Annotated[float, typer.Option(help="Learning rate.")]
OptimizerOpt = Annotated[str, typer.Option(help="sgd (momentum) or adamw.")]
ScheduleOpt = Annotated[str, typer.Option(help="multistep (x0.1 at 5/8, 3/4, 7/8), cosine or constant.")]
MomentumOpt = Annotated[float, typer.Option(help="SGD momentum.")]
WdOpt = Annotated[float, typer.Option(help="Weight decay.")]
BatchOpt = Annotated[int, typer.Option(help="Batch size.")]
WorkersOpt = Annotated[int, typer.Option(help="DataLoader worker processes.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of initialisation and data order (and, online, of the views).")]
DeviceOpt = Annotated[str, typer.Option(help="cpu or cuda.")]


@app.command(
    epilog="Examples:\n\n"
    "    kdcache distill --store store.zarr --data embedded --val-data embedded,split=test "
    "--student kdcache:mlp --loss nkd --epochs 10 --out runs/nkd\n\n"
    "    kdcache distill --teacher kdcache:cnn_small --weights teacher.pt --views 4 --seed 0 "
    "--data embedded --val-data embedded,split=test --student kdcache:mlp --loss kd --epochs 10 --out runs/online\n\n"
    "Interrupted? Add --resume to the same command."
)
@handle_errors(resume="add --resume to the same command to continue from the last finished epoch")
def distill(
    data: DataOpt,
    val_data: ValDataOpt,
    student: Annotated[str, typer.Option(help="Student spec (as for teachers).")],
    out: Annotated[Path, typer.Option(help="Run directory (metrics.jsonl, checkpoint.pt, final.pt, run.json).")],
    loss: Annotated[str, typer.Option(help="Loss: ce, kd, dkd, nkd, tf_nkd, la, dtd, ats, isats, fgcr, slkd.")] = "kd",
    loss_opt: Annotated[Optional[list[str]], typer.Option(help="Loss hyper-parameter key=value (repeatable), "
                                                          "e.g. temperature=4.")] = None,
    epochs: EpochsOpt = 10,
    store: Annotated[Optional[str], typer.Option(help="Store with the cached teacher logits.")] = None,
    teacher_name: Annotated[Optional[str], typer.Option(help="Teacher in the store (default: the only one).")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="Online mode: run this teacher live instead of --store.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="Online mode: teacher checkpoint.")] = None,
    views: Annotated[Optional[int], typer.Option(help="Online mode: number of views.")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="Online mode: augmentation recipe.")] = None,
    batch_size: BatchOpt = 128,
    workers: WorkersOpt = 0,
    lr: LrOpt = 0.05,
    optimizer: OptimizerOpt = "sgd",
    schedule: ScheduleOpt = "multistep",
    momentum: MomentumOpt = 0.9,
    weight_decay: WdOpt = 5e-4,
    seed: SeedOpt = 0,
    view_policy: Annotated[str, typer.Option(help="cycle (view e-1 mod V in epoch e) or random.")] = "cycle",
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")] = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a student from the store's cached logits (no teacher inference), or online with --teacher."""
    from kdcache.distill import DistillConfig, distill as run, format_result, parse_loss_opts

    cfg = DistillConfig(
        data=data, val_data=val_data, student=student, loss=loss, epochs=epochs, out=out, store=store,
        teacher_name=teacher_name, teacher=teacher, weights=weights, views=views, recipe=recipe,
        loss_opts=parse_loss_opts(loss_opt or []), batch_size=batch_size, workers=workers,
        optim=_optim(optimizer, lr, momentum, weight_decay, schedule, epochs), seed=seed,
        view_policy=view_policy, resume=resume, device=device,
    )
    typer.echo(format_result(run(cfg)))


@app.command(
    "train-teacher",
    epilog="Example:\n\n    kdcache train-teacher --data embedded --val-data embedded,split=test "
    "--model kdcache:cnn_small --epochs 5 --out teacher.pt --regt 0.01",
)
@handle_errors
def train_teacher(
    data: DataOpt,
    val_data: ValDataOpt,
    model: Annotated[str, typer.Option(help="Model spec, e.g. kdcache:resnet32x4.")],
    out: Annotated[Path, typer.Option(help="Checkpoint to write (state_dict + card).")],
    epochs: EpochsOpt = 10,
    recipe: Annotated[str, typer.Option(help="Augmentation recipe (preset or JSON file).")] = "fashion-mnist",
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing epsilon.")] = 0.0,
    regt: Annotated[Optional[float], typer.Option(help="Train with RegT of this beta (METHODS.md section 10).")] = None,
    batch_size: BatchOpt = 128,
    workers: WorkersOpt = 0,
    lr: LrOpt = 0.05,
    optimizer: OptimizerOpt = "sgd",
    schedule: ScheduleOpt = "multistep",
    momentum: MomentumOpt = 0.9,
    weight_decay: WdOpt = 5e-4,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a teacher (CE, label smoothing or RegT); how it was trained is recorded in its card.

    Interrupted? Run the same command again: it resumes from the last epoch.
    """
    from kdcache.teacher import TeacherConfig, train_teacher as run

    result = run(TeacherConfig(
        data=data, val_data=val_data, model=model, epochs=epochs, out=out, recipe=recipe,
        label_smoothing=label_smoothing, regt=regt, batch_size=batch_size, workers=workers,
        optim=_optim(optimizer, lr, momentum, weight_decay, schedule, epochs), seed=seed, device=device,
    ))
    typer.echo(f"teacher saved to {result.out}: val top-1 {result.val_top1:.2%}, top-5 {result.val_top5:.2%} "
               f"({result.seconds:.0f}s)")


@app.command(epilog="Example:\n\n    kdcache quickstart --workdir kdcache-quickstart")
@handle_errors
def quickstart(
    workdir: Annotated[Path, typer.Option(help="Where the teacher, store and runs are written.")] = Path(
        "kdcache-quickstart"),
    epochs: Annotated[int, typer.Option(help="Student epochs per method.")] = 0,
) -> None:
    """The whole pipeline on the embedded real Fashion-MNIST sample, no download, a few CPU minutes.

    Trains a teacher, precomputes a store, computes statistics, distills a student with CE, KD, NKD
    and ISATS, runs KD online for comparison, and prints a table.
    """
    from kdcache.quickstart import format_table, run_quickstart

    typer.echo(format_table(run_quickstart(workdir, student_epochs=epochs or None)))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

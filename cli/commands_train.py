"""Commands that train: ``distill``, ``train-teacher`` and ``quickstart``.

Each body parses, makes one library call and prints. Options that apply to
one mode only (online distillation's ``--teacher``, ``--views``,
``--view-seed``...) default to None, so the library can tell "not given" from
a value and refuse one that does not apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kdcache_cli.exits import handle_errors
from kdcache_cli.options import (
    BatchOpt,
    DataOpt,
    Device,
    DeviceOpt,
    EpochsOpt,
    Loss,
    LrOpt,
    MomentumOpt,
    Optimizer,
    OptimizerOpt,
    Precision,
    PrecisionOpt,
    RecipeOpt,
    Schedule,
    ScheduleOpt,
    SeedOpt,
    StorageOpt,
    StoreArg,
    SyncBnOpt,
    TeacherNameOpt,
    ValDataOpt,
    ViewPolicy,
    WdOpt,
    WorkersOpt,
    use_storage_options,
    value,
)


def _optim(optimizer: Optimizer, lr: float, momentum: float, weight_decay: float, schedule: Schedule,
           epochs: int) -> Any:
    from kdcache.engine import OptimConfig

    return OptimConfig(optimizer=value(optimizer), lr=lr, momentum=momentum, weight_decay=weight_decay,
                       schedule=value(schedule), epochs=epochs)


DISTILL_EPILOG = (
    "Examples:\n\n"
    "    kdcache distill store.zarr --data embedded --val-data embedded,split=test "
    "--student kdcache:mlp --loss nkd --epochs 10 --out runs/nkd\n\n"
    "    kdcache distill --teacher kdcache:cnn_small --weights teacher.pt --views 4 "
    "--data embedded --val-data embedded,split=test --student kdcache:mlp --loss kd --epochs 10 --out runs/online\n\n"
    "The first trains from the store's cached logits; the second (online: no STORE, a --teacher) runs the "
    "teacher live.\n\n"
    "Interrupted? Add --resume to the same command."
)


@handle_errors(resume="add --resume to the same command to continue from the last finished epoch")
def distill(
    data: DataOpt,
    val_data: ValDataOpt,
    student: Annotated[str, typer.Option("--student", help="Student model spec (as for teachers).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (metrics.jsonl, checkpoint.pt, "
                                                    "final.pt, run.json).")],
    store: Annotated[Optional[str], typer.Argument(
        help="Store with the cached teacher logits (a directory or an s3:// gs:// az:// file:// memory:// URL). "
             "Leave out for online mode (--teacher).",
        metavar="[STORE]", show_default=False)] = None,
    loss: Annotated[Loss, typer.Option("--loss", help="Distillation loss (docs/losses.md).")] = Loss("kd"),
    loss_opt: Annotated[Optional[list[str]], typer.Option(
        "--loss-opt", help="Loss hyper-parameter key=value (repeatable), e.g. temperature=4.",
        show_default=False)] = None,
    epochs: EpochsOpt = 10,
    teacher_name: TeacherNameOpt = None,
    teacher: Annotated[Optional[str], typer.Option(
        "--teacher", help="Online mode: teacher model spec, run live instead of reading a STORE.",
        show_default=False)] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Online mode: teacher checkpoint.",
                                                   show_default=False)] = None,
    views: Annotated[Optional[int], typer.Option(
        "--views", help="Online mode: number of views the teacher is run on (required online).", min=1,
        show_default=False)] = None,
    recipe: RecipeOpt = None,
    view_seed: Annotated[Optional[int], typer.Option(
        "--view-seed", help="Online mode: seed the views derive from (default: --seed), e.g. a store's seed "
                            "to replay its views.", min=0, show_default=False)] = None,
    batch_size: BatchOpt = 128,
    workers: WorkersOpt = 0,
    lr: LrOpt = 0.05,
    optimizer: OptimizerOpt = Optimizer.sgd,
    schedule: ScheduleOpt = Schedule.multistep,
    momentum: MomentumOpt = 0.9,
    weight_decay: WdOpt = 5e-4,
    seed: SeedOpt = 0,
    init_seed: Annotated[Optional[int], typer.Option(
        "--init-seed", help="Seed of the student's initialisation (and dropout) only (default: --seed); "
                            "--seed then sets the data order.", min=0, show_default=False)] = None,
    view_policy: Annotated[Optional[ViewPolicy], typer.Option(
        "--view-policy", help="Which view a sample shows in epoch e: cycle (view (e-1) mod V, the default) "
                              "or random.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out.")] = False,
    device: DeviceOpt = Device.cpu,
    storage_option: StorageOpt = None,
    allow_approximate_encoding: Annotated[bool, typer.Option(
        "--allow-approximate-encoding", help="Train on a store encoding the loss cannot use exactly (e.g. a "
                                             "sample:N@T store with a non-KD loss), with a warning.")] = False,
    sync_bn: SyncBnOpt = False,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Train a student from a STORE's cached logits (no teacher inference), or online with --teacher."""
    from kdcache.distill.run import DistillConfig, distill as run, format_result, parse_loss_opts
    from kdcache.distributed import is_main

    use_storage_options(storage_option, store)
    cfg = DistillConfig(
        data=data, val_data=val_data, student=student, loss=value(loss), epochs=epochs, out=out,
        store=None if store is None else str(store), teacher_name=teacher_name, teacher=teacher, weights=weights,
        views=views, recipe=recipe, loss_opts=parse_loss_opts(loss_opt or []), batch_size=batch_size,
        workers=workers, optim=_optim(optimizer, lr, momentum, weight_decay, schedule, epochs), seed=seed,
        init_seed=init_seed, view_seed=view_seed, view_policy=value(view_policy), resume=resume, device=value(device),
        allow_approximate_encoding=allow_approximate_encoding, sync_bn=sync_bn, precision=value(precision),
    )
    result = run(cfg)
    if is_main():  # under torchrun, one summary for the job
        typer.echo(format_result(result))


SWEEP_EPILOG = (
    "Example:\n\n    kdcache sweep store.zarr --data embedded --val-data embedded,split=test "
    "--student kdcache:mlp --run ce:ce --run kd-t2:kd:temperature=2 --run nkd:nkd "
    "--init-seed 0 --init-seed 1 --epochs 10 --out runs/sweep\n\n"
    "Each (run, init seed) student writes OUT/NAME-sN/, bitwise equal to `kdcache distill STORE ... "
    "--loss LOSS --loss-opt ... --init-seed N --out OUT/NAME-sN`; OUT/leaderboard.md ranks them.\n\n"
    "Interrupted? Add --resume to the same command."
)


@handle_errors(resume="add --resume to the same command to continue every student from its last finished epoch")
def sweep(
    store: StoreArg,
    data: DataOpt,
    val_data: ValDataOpt,
    student: Annotated[str, typer.Option("--student", help="Student model spec (every run trains this model).")],
    run: Annotated[list[str], typer.Option(
        "--run", help="NAME:LOSS[:key=value,...] (repeatable): a run of LOSS with these --loss-opt values, "
                      "trained once per --init-seed into OUT/NAME-sN.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Sweep directory to create (a run directory per student, "
                                                    "leaderboard.md, leaderboard.csv).")],
    init_seed: Annotated[Optional[list[int]], typer.Option(
        "--init-seed", help="Init seed (repeatable; default: --seed): each run trains one student per seed.",
        min=0, show_default=False)] = None,
    epochs: EpochsOpt = 10,
    teacher_name: TeacherNameOpt = None,
    batch_size: BatchOpt = 128,
    workers: WorkersOpt = 0,
    lr: LrOpt = 0.05,
    optimizer: OptimizerOpt = Optimizer.sgd,
    schedule: ScheduleOpt = Schedule.multistep,
    momentum: MomentumOpt = 0.9,
    weight_decay: WdOpt = 5e-4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the data order (shared by every student).",
                                      min=0)] = 0,
    view_policy: Annotated[Optional[ViewPolicy], typer.Option(
        "--view-policy", help="Which view a sample shows in epoch e: cycle (the default) or random.",
        show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted sweep in --out.")] = False,
    device: DeviceOpt = Device.cpu,
    storage_option: StorageOpt = None,
    allow_approximate_encoding: Annotated[bool, typer.Option(
        "--allow-approximate-encoding", help="Train on a store encoding a run's loss cannot use exactly, with a "
                                             "warning (as distill's).")] = False,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Train several students (runs x init seeds) from a STORE in one pass over the data per epoch."""
    from kdcache.distill.sweep import SweepConfig, format_result, parse_run, sweep as run_sweep

    use_storage_options(storage_option, store)
    cfg = SweepConfig(
        store=str(store), data=data, val_data=val_data, student=student, runs=[parse_run(r) for r in run],
        init_seeds=list(init_seed) if init_seed else [seed], epochs=epochs, out=out, teacher_name=teacher_name,
        batch_size=batch_size, workers=workers, optim=_optim(optimizer, lr, momentum, weight_decay, schedule, epochs),
        seed=seed, view_policy=value(view_policy), resume=resume, device=value(device),
        allow_approximate_encoding=allow_approximate_encoding, precision=value(precision),
    )
    typer.echo(format_result(run_sweep(cfg)))


TRAIN_TEACHER_EPILOG = (
    "Example:\n\n    kdcache train-teacher --data embedded --val-data embedded,split=test "
    "--model kdcache:cnn_small --epochs 5 --out teacher.pt --regt 0.01\n\n"
    "Interrupted? Run the same command again: it resumes from the last finished epoch."
)


@handle_errors
def train_teacher(
    data: DataOpt,
    val_data: ValDataOpt,
    model: Annotated[str, typer.Option("--model", help="Model spec, e.g. kdcache:resnet32x4.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (state_dict + card).")],
    epochs: EpochsOpt = 10,
    recipe: RecipeOpt = None,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", help="Label smoothing epsilon.")] = 0.0,
    regt: Annotated[Optional[float], typer.Option(
        "--regt", help="Train with RegT of this beta (docs/methods.md, RegT).", show_default=False)] = None,
    batch_size: BatchOpt = 128,
    workers: WorkersOpt = 0,
    lr: LrOpt = 0.05,
    optimizer: OptimizerOpt = Optimizer.sgd,
    schedule: ScheduleOpt = Schedule.multistep,
    momentum: MomentumOpt = 0.9,
    weight_decay: WdOpt = 5e-4,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.cpu,
    sync_bn: SyncBnOpt = False,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Train a teacher (CE, label smoothing or RegT); how it was trained is recorded in its card."""
    from kdcache.distributed import is_main
    from kdcache.teacher.train import TeacherConfig, train_teacher as run

    result = run(TeacherConfig(
        data=data, val_data=val_data, model=model, epochs=epochs, out=out, recipe=recipe,
        label_smoothing=label_smoothing, regt=regt, batch_size=batch_size, workers=workers,
        optim=_optim(optimizer, lr, momentum, weight_decay, schedule, epochs), seed=seed, device=value(device),
        sync_bn=sync_bn, precision=value(precision),
    ))
    if is_main():  # under torchrun, one summary for the job
        typer.echo(f"teacher saved to {result.out}: val top-1 {result.val_top1:.2%}, top-5 {result.val_top5:.2%} "
                   f"({result.seconds:.0f}s)")


QUICKSTART_EPILOG = "Example:\n\n    kdcache quickstart --out kdcache-quickstart"


@handle_errors
def quickstart(
    out: Annotated[Path, typer.Option("--out", help="Directory to create for the teacher, store and runs "
                                                    "(re-running reuses the teacher and store).")] = Path(
        "kdcache-quickstart"),
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Student epochs per method (default 12).",
                                                  min=1, show_default=False)] = None,
) -> None:
    """The whole pipeline on the embedded real Fashion-MNIST sample, no download, a few CPU minutes.

    Trains a teacher, precomputes a store, computes statistics, distills a student with CE, KD, NKD
    and ISATS, runs KD online for comparison, and prints a table.
    """
    from kdcache.quickstart import run_quickstart
    from kdcache_cli.tables import quickstart_table

    typer.echo(quickstart_table(run_quickstart(out, student_epochs=epochs)))

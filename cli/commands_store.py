"""Commands that make or read a store: ``precompute``, ``info``, ``verify``, ``stats``.

Each body parses, makes one library call and prints. Library modules are
imported inside the bodies so that ``--help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from kdcache_cli.exits import handle_errors, usage_fail
from kdcache_cli.options import (
    Codec,
    DataOpt,
    Device,
    DeviceOpt,
    EncodingOpt,
    Precision,
    PrecisionOpt,
    RecipeOpt,
    StorageOpt,
    StoreArg,
    TeacherNameOpt,
    WorkersOpt,
    given,
    use_storage_options,
    value,
)

PRECOMPUTE_EPILOG = (
    "Example:\n\n"
    "    kdcache precompute --data embedded --teacher kdcache:cnn_small --weights teacher.pt "
    "--views 4 --seed 0 --out store.zarr\n\n"
    "Interrupted? Run the same command again: it resumes from the completed chunks."
)


@handle_errors
def precompute(
    data: DataOpt,
    teacher: Annotated[
        list[str],
        typer.Option("--teacher", help="Teacher model spec (repeatable): torchvision:NAME, kdcache:NAME, "
                     "import:module:factory, torchscript:PATH, export:PATH."),
    ],
    out: Annotated[str, typer.Option("--out", help="Store to create, resume, or add a teacher to: a directory, "
                                                   "or an s3:// gs:// az:// file:// memory:// URL.")],
    views: Annotated[int, typer.Option("--views", help="Augmented views per sample.", min=1)] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Store seed; every view derives from (seed, sample, view).",
                                      min=0)] = 0,
    weights: Annotated[
        Optional[list[str]],
        typer.Option("--weights", help="Checkpoint per --teacher, in the same order (loaded with "
                                       "weights_only=True).", show_default=False),
    ] = None,
    teacher_name: Annotated[
        Optional[list[str]], typer.Option("--teacher-name", help="Name in the store per --teacher "
                                                                 "(default: from the spec).", show_default=False)
    ] = None,
    random_init: Annotated[bool, typer.Option(
        "--random-init", help="Each --teacher given without --weights is an untrained kdcache:/torchvision: "
                              "network, on purpose (recorded in its card); refused when every teacher has "
                              "--weights.")] = False,
    recipe: RecipeOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per teacher batch (rounded to the "
                                                                 "micro-batch).", min=1)] = 256,
    workers: WorkersOpt = 0,
    encoding: EncodingOpt = "float16",
    codec: Annotated[Codec, typer.Option("--codec", help="Chunk compression: none (fastest), zstd or "
                                                         "blosc-zstd (smaller, slower).")] = Codec.none,
    chunk_rows: Annotated[Optional[int], typer.Option("--chunk-rows", help="Rows per chunk (default: ~4 MB "
                                                                           "chunks).", min=1)] = None,
    device: DeviceOpt = Device.cpu,
    storage_option: StorageOpt = None,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Run each teacher **once** over every (view, sample) and store its raw logits."""
    from kdcache.distributed import is_main
    from kdcache.precompute.run import TeacherRequest, precompute as run
    from kdcache_cli.tables import format_summary

    use_storage_options(storage_option, out)
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
        workers=workers, encoding=encoding, codec=value(codec), chunk_rows=chunk_rows, device=value(device),
        random_init=random_init, progress=True, precision=value(precision),
    )
    if is_main():  # under torchrun, one summary for the job
        typer.echo(format_summary(result))


INFO_EPILOG = "Example:\n\n    kdcache info store.zarr\n\n    kdcache info store.zarr --json"


@handle_errors(reads_only=True)
def info(
    store: StoreArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full description as JSON.")] = False,
    storage_option: StorageOpt = None,
) -> None:
    """Show what is in a store: dataset, fingerprint, views, recipe, teachers, statistics, sizes."""
    from kdcache.audit import format_info, store_info

    use_storage_options(storage_option, store)
    description = store_info(store)
    typer.echo(json.dumps(description, indent=2) if as_json else format_info(description))


VERIFY_EPILOG = "Example:\n\n    kdcache verify store.zarr --replay 16"


@handle_errors(reads_only=True)
def verify(
    store: StoreArg,
    replay: Annotated[int, typer.Option("--replay", help="Re-run the teacher on N random (sample, view) pairs "
                                                         "and compare its logits with the stored ones.", min=0)] = 0,
    teacher_name: TeacherNameOpt = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset spec for --replay, if not where the store "
                                                               "says.", show_default=False)] = None,
    weights: Annotated[Optional[str], typer.Option(
        "--weights", help="Teacher checkpoint for --replay, if moved from where the store says (its SHA-256 "
                          "must match).",
        show_default=False)] = None,
    storage_option: StorageOpt = None,
) -> None:
    """Check every chunk's completion and checksum; with --replay, audit the teacher's logits.

    Exits 1 and names the bad chunk when anything is wrong.
    """
    from kdcache.audit import format_verify, verify_store

    use_storage_options(storage_option, store)
    report = verify_store(store, replay=replay, teacher=teacher_name, data=data, weights=weights, progress=replay > 0)
    typer.echo(format_verify(report))
    if not report.ok:
        raise typer.Exit(1)


def parse_grid(items: list[str] | None) -> list[float] | None:
    """Repeated ``--grid T`` values, one number each (the comma form ``--grid 1,2,3`` was removed)."""
    if not items:
        return None
    try:
        return [float(item) for item in items]
    except ValueError:
        parts = [p.strip() for item in items for p in item.split(",") if p.strip()]
        again = " ".join(f"--grid {p}" for p in parts) or "--grid 1 --grid 2 --grid 4"
        usage_fail(f"--grid {' '.join(items)!r}: each --grid takes one number; repeat the option: {again}")


CONVERT_EPILOG = ("Example:\n\n    kdcache convert store.zarr --teacher-name cnn --encoding topk:32 --as cnn_top32\n\n"
                  "Interrupted? Run the same command again: it resumes from the completed chunks.")


@handle_errors
def convert(
    store: StoreArg,
    encoding: EncodingOpt,
    teacher_name: TeacherNameOpt = None,
    new_name: Annotated[Optional[str], typer.Option(
        # \< \>: help is Markdown, where a bare <encoding> is an HTML tag and vanishes.
        "--as", help="Name of the new teacher entry (default: NAME_\\<encoding\\>, e.g. cnn_topk32).",
        show_default=False)] = None,
    storage_option: StorageOpt = None,
) -> None:
    """Re-encode a cached teacher into a new teacher entry on the same views, without running the teacher."""
    from kdcache.precompute.convert import convert as run, format_convert

    use_storage_options(storage_option, store)
    typer.echo(format_convert(run(store, teacher=teacher_name, encoding=encoding, new_name=new_name)))


STATS_EPILOG = "Example:\n\n    kdcache stats store.zarr --tau0 3 --tau0 2\n\n" \
               "    kdcache stats store.zarr --grid 1 --grid 2 --grid 4"


@handle_errors
def stats(
    store: StoreArg,
    teacher_name: TeacherNameOpt = None,
    tau0: Annotated[Optional[list[float]], typer.Option(
        "--tau0", help="FGCR class-table temperature (repeatable; default 3, FGCR's tau - 1).",
        show_default=False)] = None,
    grid: Annotated[Optional[list[str]], typer.Option(
        "--grid", help="ISATS temperature grid value (repeatable; default 1 2 3 4 5 6 8).",
        show_default=False)] = None,
    storage_option: StorageOpt = None,
) -> None:
    """Compute ISATS tau*, FGCR class tables and teacher accuracy once, into the store."""
    from kdcache.stats import compute_stats, format_stats

    use_storage_options(storage_option, store)
    result = compute_stats(store, teacher=teacher_name, **given(tau0=tau0, grid=parse_grid(grid)))
    typer.echo(format_stats(result))

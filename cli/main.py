"""kdcache's Typer app. Each command parses its options and makes one library call.

Errors kdcache raises on purpose (:class:`kdcache.errors.KdcacheError`) end in
one line on stderr and exit code 2; Ctrl-C ends with exit code 130 and a note
on how to resume. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from kdcache.errors import KdcacheError

app = typer.Typer(
    name="kdcache",
    help="Run a teacher once over replayable augmented views, cache its logits in a zarr store, "
    "and distill any number of students from the store.\n\n"
    "Start with `kdcache quickstart`, then see `kdcache COMMAND --help`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn kdcache's own errors into one line and a non-zero exit; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KdcacheError as exc:
            _fail(str(exc), 2)
        except KeyboardInterrupt:
            _fail("interrupted; everything finished so far is saved: run the same command again to resume", 130)
        return None

    return wrapper  # type: ignore[return-value]


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
        _fail("give at most one --weights and one --teacher-name per --teacher", 2)
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


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

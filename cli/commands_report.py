"""``kdcache report``: PNG plots and a markdown page of finished (or running) runs and a store's statistics.

The body parses, makes one library call (:func:`kdcache.report.write_report`) and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kdcache_cli.exits import fail, handle_errors, usage_fail
from kdcache_cli.options import StorageOpt, TeacherNameOpt, use_storage_options

REPORT_EPILOG = (
    "Example:\n\n"
    "    kdcache report runs/ce-s0 runs/ce-s1 runs/kd-s0 runs/kd-s1 --store store.zarr --out report\n\n"
    "Runs named NAME-sN (as sweep names them) that record the same settings are the seeds of method NAME: the "
    "page shows their mean ± std. Runs of one name that differ in more than their seeds are separate methods, "
    "labelled by the difference (kd (temperature=2), kd (temperature=8)). "
    "Open OUT/report.md (or the PNGs in OUT)."
)


@handle_errors
def report(
    out: Annotated[Path, typer.Option("--out", help="Directory for report.md and the PNG figures.")],
    runs: Annotated[Optional[list[Path]], typer.Argument(
        help="Run directories (the --out of distill, or the NAME-sN directories of sweep).",
        metavar="[RUN_DIR]...", show_default=False)] = None,
    store: Annotated[Optional[str], typer.Option(
        "--store", help="Also plot this store's statistics (teacher accuracy per view, ISATS tau* histogram, "
                        "FGCR class tables); run `kdcache stats STORE` first.", show_default=False)] = None,
    teacher_name: TeacherNameOpt = None,
    baseline: Annotated[str, typer.Option(
        "--baseline", help="Method the table compares against, when present.")] = "ce",
    storage_option: StorageOpt = None,
) -> None:
    """Plot validation accuracy per epoch, final accuracy per method (± std over seeds) and a store's statistics."""
    from kdcache.report import format_report, write_report

    if not runs and store is None:
        usage_fail("nothing to report: pass run directories (RUN_DIR...) and/or --store STORE")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a directory; choose another --out")
    use_storage_options(storage_option, store)
    typer.echo(format_report(write_report(runs or [], out, store=store, teacher=teacher_name, baseline=baseline)))

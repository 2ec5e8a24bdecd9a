"""kdcache's Typer app: the list of commands. Each command parses its options and makes one library call.

Where things live: :mod:`kdcache_cli.options` is the vocabulary (choices as
enums, shared options), :mod:`kdcache_cli.exits` how a command ends (exit codes
0 ok, 1 a kdcache error or an OS condition in one line, 2 a usage error, 130
interrupted, and deprecation notes), :mod:`kdcache_cli.commands_store` and
:mod:`kdcache_cli.commands_train` the commands.
"""

from __future__ import annotations

import sys

import typer

from kdcache_cli import commands_ensemble as ensemble_cmds
from kdcache_cli import commands_report as report_cmds
from kdcache_cli import commands_store as store_cmds
from kdcache_cli import commands_train as train_cmds
from kdcache_cli.exits import OneLineErrors

app = typer.Typer(
    name="kdcache",
    cls=OneLineErrors,
    help="Run a teacher once over replayable augmented views, cache its logits in a zarr store, "
    "and distill any number of students from the store.\n\n"
    "Start with `kdcache quickstart`, then see `kdcache COMMAND --help`. "
    "Exit codes: 0 ok, 1 an error (one line), 2 a usage error, 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

app.command(epilog=store_cmds.PRECOMPUTE_EPILOG)(store_cmds.precompute)
app.command(epilog=store_cmds.INFO_EPILOG)(store_cmds.info)
app.command(epilog=store_cmds.VERIFY_EPILOG)(store_cmds.verify)
app.command(epilog=store_cmds.STATS_EPILOG)(store_cmds.stats)
app.command(epilog=store_cmds.CONVERT_EPILOG)(store_cmds.convert)
app.command(epilog=ensemble_cmds.ENSEMBLE_EPILOG)(ensemble_cmds.ensemble)
app.command(epilog=train_cmds.DISTILL_EPILOG)(train_cmds.distill)
app.command(epilog=train_cmds.SWEEP_EPILOG)(train_cmds.sweep)
app.command("train-teacher", epilog=train_cmds.TRAIN_TEACHER_EPILOG)(train_cmds.train_teacher)
app.command(epilog=train_cmds.QUICKSTART_EPILOG)(train_cmds.quickstart)
app.command(epilog=report_cmds.REPORT_EPILOG)(report_cmds.report)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

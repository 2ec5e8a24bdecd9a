"""kdcache's Typer app. Each command parses its options and makes one library call."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="kdcache",
    help="Run a teacher once over replayable augmented views, cache its logits, "
    "and distill any number of students from the cache.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """kdcache: cached-logit knowledge distillation."""

"""Driving the CLI in tests the way a user would, and checking its error contract."""

from __future__ import annotations

from typer.testing import CliRunner

from kdcache_cli.main import app

runner = CliRunner()


def run_cli(*args: object) -> tuple[int, str]:
    """Run `kdcache ARGS...`; return the exit code and stdout+stderr as a terminal shows them."""
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def assert_one_line_error(code: int, text: str, *needles: str, exit_code: int = 1) -> None:
    """A user error: ``exit_code`` (1 a kdcache error, 2 a usage error), no traceback, exactly one
    `error:` line containing every needle."""
    assert code == exit_code, text
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    for needle in needles:
        assert needle in lines[0], text

"""The command line explains itself: `--help` of the app and of every command, with an example."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdcache_cli.main import app

COMMANDS = ["precompute", "info", "verify", "stats", "distill", "train-teacher", "quickstart", "report"]
runner = CliRunner()


def test_app_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"kdcache {command}" in result.output


def test_console_script_is_installed() -> None:
    # The `kdcache` script pip installed beside this interpreter (the README's command), not `python -m`.
    script = shutil.which("kdcache", path=str(Path(sys.executable).parent))
    assert script is not None, f"no `kdcache` console script beside {sys.executable}: pip install -e . installs it"
    out = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "precompute" in out.stdout, out.stderr


def test_bad_data_spec_is_one_line() -> None:
    result = runner.invoke(app, ["info", "/nonexistent/store.zarr"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1
    assert "kdcache precompute" in result.output

"""The documented torchrun command lines hand kdcache every option unchanged.

torchrun's own parser reads every word that looks like one of its options, even after the program,
and accepts abbreviations: `torchrun ... --no-python kdcache sweep --run ...` fails with "ambiguous
option: --run could match --run-path, --run_path". docs/cli.md therefore ends torchrun's options with
`--`; this checks, with torchrun's real parser, that every option of every command then reaches kdcache.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from torch.distributed.run import get_args_parser

from kdcache_cli.main import app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("precompute", "distill", "train-teacher", "sweep")


def _options(command: str) -> list[str]:
    group = typer.main.get_command(app)
    return sorted(o for p in group.commands[command].params for o in p.opts if o.startswith("-"))


def _documented_prefixes() -> list[list[str]]:
    """torchrun's part (up to and including `kdcache`) of each torchrun line in docs/cli.md."""
    text = (ROOT / "docs" / "cli.md").read_text()
    lines = [line for line in text.splitlines() if re.match(r"^torchrun .* kdcache \S+", line)]
    assert len(lines) >= 3, "docs/cli.md shows how to launch kdcache under torchrun"
    return [shlex.split(line.split(" kdcache ", 1)[0]) + ["kdcache"] for line in lines]


def _parse(argv: list[str]) -> tuple[str, list[str]]:
    try:
        args = get_args_parser().parse_args(argv[1:])  # argv[0] is "torchrun"
    except SystemExit:
        raise AssertionError(f"torchrun's parser refused: {' '.join(argv)}") from None
    return args.training_script, args.training_script_args


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_passes_through_the_documented_torchrun_line(command: str) -> None:
    for prefix in _documented_prefixes():
        for option in _options(command):
            script, rest = _parse([*prefix, command, option, "x"])
            assert (script, rest) == ("kdcache", [command, option, "x"]), (prefix, option)


def test_without_the_separator_torchrun_takes_run_for_its_own_option() -> None:
    """Why the docs write `--`: the failure a user meets without it."""
    with pytest.raises(AssertionError, match="refused"):
        _parse(["torchrun", "--nproc-per-node", "1", "--no-python", "kdcache", "sweep", "--run", "kd:kd"])

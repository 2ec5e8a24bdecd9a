"""The docs change with the CLI and stand on their own: every `kdcache ...` command shown in README.md and
docs/ parses with today's options (no removed spelling), and nothing in the project sends a reader to a
file outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from kdcache_cli.main import app
from tests.cli_helpers import shown_commands

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


COMMANDS = shown_commands()


def test_the_docs_show_every_command() -> None:
    # Every command the app has (not a list typed here, which a new command would not join).
    shown = {argv[0] for _, argv in COMMANDS if argv}
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    assert commands - shown == set(), f"commands no ```bash block of the docs shows: {sorted(commands - shown)}"


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_command_in_the_docs_parses_with_the_current_spelling(where: str, argv: list[str]) -> None:
    group = get_command(app)
    name, *rest = argv
    command = group.commands[name]  # type: ignore[attr-defined]
    # Raises on an unknown option (a removed spelling: --store, --workdir, verify/stats --teacher), a bad
    # choice or a missing option.
    ctx = command.make_context(name, rest)
    grid = ctx.params.get("grid") or []
    assert not any("," in g for g in grid), f"{where} uses the removed comma --grid"


# The names are assembled so that a search of the project for them does not find this test.
OUTSIDE = re.compile("|".join(re.escape(a + b) for a, b in [
    ("METHODS", ".md"), ("ZARR-", "NOTES"), ("DESIGN", ".md"), ("STYLE", ".md"), ("../", "shared")]))
PROJECT_FILES = sorted(
    p for pattern in ("*.py", "*.md", "*.toml")
    for p in ROOT.rglob(pattern)
    if not any(part.startswith(".") or part in {"build", "dist", "node_modules"} for part in p.relative_to(ROOT).parts)
    and not p.name.endswith(".egg-info") and p != Path(__file__)
)
@pytest.mark.parametrize("path", PROJECT_FILES, ids=[str(p.relative_to(ROOT)) for p in PROJECT_FILES])
def test_nothing_points_outside_the_project(path: Path) -> None:
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
            if OUTSIDE.search(line)]
    assert hits == [], f"{path.relative_to(ROOT)} refers to files outside the project: {hits}"

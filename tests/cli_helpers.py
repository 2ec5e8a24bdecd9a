"""Driving the CLI in tests the way a user would, and checking its error contract."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

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


TINY = "import:tests.helpers:tiny"
"""The tests' smallest network (a linear layer over the pixels), as a model spec."""
RECIPE = str(Path(__file__).resolve().parent / "data" / "recipe-small.json")
"""A small crop-and-flip recipe for 12x12 synthetic images."""


def _options(options: dict[str, object]) -> list[object]:
    """``{"teacher_name": "t"}`` as ``["--teacher-name", "t"]`` (None leaves the option out)."""
    out: list[object] = []
    for key, value in options.items():
        if value is not None:
            out += [f"--{key.replace('_', '-')}", value]
    return out


def precompute_args(out: object, *extra: object, data: str, teacher: str = TINY, views: object = 2,
                    seed: object = 7, recipe: str = RECIPE, chunk_rows: object = 64,
                    **options: object) -> list[str]:
    """`kdcache precompute` arguments, as strings: every test module's store is made through this one builder.

    ``options`` are further ``--flag VALUE`` pairs (``encoding="float32"`` -> ``--encoding float32``);
    ``extra`` is appended as given.
    """
    args = ["precompute", "--data", data, "--teacher", teacher, "--views", views, "--seed", seed,
            "--recipe", recipe, "--out", out, "--chunk-rows", chunk_rows, *_options(options), *extra]
    return [str(a) for a in args]


def distill_args(out: object, *extra: object, data: str, val_data: str, store: object = None,
                 student: str = TINY, epochs: object = 1, batch_size: object = 32,
                 **options: object) -> list[str]:
    """`kdcache distill` arguments, as strings (``store`` None: online, with ``teacher=`` in ``options``)."""
    args = ["distill", *([store] if store is not None else []), "--data", data, "--val-data", val_data,
            "--student", student, "--epochs", epochs, "--batch-size", batch_size, "--out", out,
            *_options(options), *extra]
    return [str(a) for a in args]


DOCS = [Path(__file__).resolve().parents[1] / "README.md",
        *sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md"))]


def shown_commands() -> list[tuple[str, list[str]]]:
    """Every `kdcache ...` line of the ```bash blocks of the docs, continuations joined, comments dropped."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                line = line.split("#")[0].strip()
                for part in line.split("&&"):
                    words = shlex.split(part)
                    if words[:1] == ["kdcache"]:
                        found.append((f"{doc.name}: {part.strip()}", words[1:]))
    return found

"""The shape of the code base that the maintainers rely on, checked so that it cannot drift silently.

The library reports through logging, warnings and exceptions (only ``cli/`` and the progress module
print); the package root holds only what every stage shares; modules stay small enough to hold in mind;
test modules share their setup through ``tests/conftest.py`` and helper modules, never by importing
each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "kdcache").rglob("*.py"))
TESTS = sorted((ROOT / "tests").glob("test_*.py"))
MAX_LINES = 430  # "about 400": a module past this is split by concern


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.id if isinstance(f, ast.Name) else f"{getattr(f.value, 'id', '')}.{f.attr}"
                      if isinstance(f, ast.Attribute) else "")
    return names


def test_the_library_does_not_print() -> None:
    printing = {str(p.relative_to(ROOT)): sorted(_calls(p) & {"print", "console.print"})
                for p in LIBRARY if p.name != "progress.py"}
    assert {k: v for k, v in printing.items() if v} == {}


def test_the_package_root_holds_at_most_ten_modules() -> None:
    root = sorted(p.name for p in (ROOT / "kdcache").glob("*.py"))
    assert len(root) <= 10, root


def test_no_module_is_too_long_to_hold_in_mind() -> None:
    long = {str(p.relative_to(ROOT)): n for p in [*LIBRARY, *(ROOT / "cli").glob("*.py")]
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_test_modules_share_their_setup_and_never_import_each_other() -> None:
    builders: dict[str, list[str]] = {"precompute_args": [], "distill_args": []}
    for path in [*TESTS, *(ROOT / "tests").glob("*.py")]:
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) tests\.test_", text, flags=re.M), path.name
        for name in builders:
            if re.search(rf"^def {name}\(", text, flags=re.M):
                builders[name].append(path.name)
    assert builders == {"precompute_args": ["cli_helpers.py"], "distill_args": ["cli_helpers.py"]}
    assert (ROOT / "tests" / "conftest.py").is_file()

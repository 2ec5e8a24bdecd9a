"""Text that says how the code works must still be true: entry points, doc pointers, import claims."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import kdcache.data
import kdcache_cli.main
import kdcache_cli.options

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_script_names_the_app_and_nothing_dead_is_left() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["kdcache"].partition(":")
    assert getattr(import_module(module), attr) is kdcache_cli.main.app
    assert not hasattr(kdcache_cli.main, "main")  # an entry point nothing named


def test_the_data_package_points_to_the_doc_of_its_specs() -> None:
    doc = kdcache.data.__doc__ or ""
    (path,) = re.findall(r"Specs \(``(docs/[\w.-]+\.md)``", doc)
    text = (ROOT / path).read_text()
    for scheme in kdcache.data.list_schemes():
        assert f"`{scheme}" in text, f"{path} does not document the {scheme} spec"
    assert "synthetic:samples=N,classes=C,size=S,channels=K,seed=R" in text


def test_what_the_cli_says_about_torch_at_help_is_true() -> None:
    probe = "import sys, kdcache_cli.main; print('torch' in sys.modules)"
    imports_torch = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                                   check=True, timeout=120).stdout.strip() == "True"
    claims_no_torch = re.search(r"--help``? (does|do) not import torch", kdcache_cli.options.__doc__ or "")
    assert not (imports_torch and claims_no_torch)

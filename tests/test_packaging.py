"""A wheel built from the repository works outside it: package data, presets, every module, the CLI.

Built from a copy of the source tree (so the test writes nothing into the
checkout), installed with ``--no-deps`` into a fresh virtual environment
that reuses this interpreter's packages (torch, ...), then run from an empty
directory, where a source tree or an editable install cannot help.
"""

from __future__ import annotations

import json
import shutil
import tomllib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What the wheel is built from: everything pyproject.toml packages.
_SOURCES = ["pyproject.toml", "README.md", "kdcache", "cli", "data"]


def _source_modules() -> set[str]:
    """Dotted names of every module of the source tree, as installed (cli -> kdcache_cli, data -> kdcache._data)."""
    names = set()
    for top, package in (("kdcache", "kdcache"), ("cli", "kdcache_cli"), ("data", "kdcache._data")):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT / top).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join([package, *parts]))
    return names


def _run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for name in _SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w", str(tmp / "dist")], src)
    (wheel,) = (tmp / "dist").glob("kdcache-*.whl")
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(tmp / "venv")], tmp)
    python = tmp / "venv" / "bin" / "python"
    # This interpreter's pip installs into the venv; --force-reinstall because
    # the editable kdcache of the outer environment is visible from the venv.
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], tmp)
    return python


_CHECK = textwrap.dedent(
    """
    import importlib, json, pkgutil
    import kdcache, kdcache_cli, kdcache._data
    from kdcache.data import EMBEDDED_PATH, open_data
    from kdcache.views import list_presets, load_recipe, resolve_recipe

    modules = set()
    for package in (kdcache, kdcache_cli):
        modules.add(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
            modules.add(info.name)
    train, test = open_data("embedded"), open_data("embedded,split=test")
    presets = {name: load_recipe(name).hash() for name in list_presets()}
    print(json.dumps({
        "kdcache": kdcache.__file__, "cli": kdcache_cli.__file__, "embedded": str(EMBEDDED_PATH),
        "sizes": [len(train), len(test)], "image": list(train.image(0).shape),
        "fingerprint": train.fingerprint(), "presets": presets,
        "default": resolve_recipe(None, train).name, "modules": sorted(modules),
    }))
    """
)


@pytest.mark.slow  # ~25 s: builds a wheel and imports every module in a fresh environment
def test_a_wheel_runs_from_an_empty_directory(venv_python: Path, tmp_path: Path) -> None:
    from kdcache.data import open_data
    from kdcache.views import list_presets, load_recipe

    empty = tmp_path / "empty"
    empty.mkdir()
    out = json.loads(_run([str(venv_python), "-c", _CHECK], empty))
    venv = venv_python.parent.parent
    # The wheel's code and data, not this checkout's (nor its editable install).
    for key in ("kdcache", "cli", "embedded"):
        assert Path(out[key]).is_relative_to(venv), (key, out[key])
    assert out["sizes"] == [6000, 1000] and out["image"] == [1, 28, 28]
    assert out["fingerprint"] == open_data("embedded").fingerprint()
    assert out["presets"] == {name: load_recipe(name).hash() for name in list_presets()}
    assert out["default"] == "fashion-mnist"
    # Every module of the source tree is in the wheel (pyproject lists packages by hand).
    assert set(out["modules"]) | {"kdcache._data"} >= _source_modules() - {"kdcache._data.make_embedded"}


@pytest.mark.slow
def test_the_installed_cli_starts_from_an_empty_directory(venv_python: Path, tmp_path: Path) -> None:
    kdcache = venv_python.parent / "kdcache"
    assert kdcache.is_file()
    text = _run([str(kdcache), "quickstart", "--help"], tmp_path)
    assert "quickstart" in text.lower() and "Usage" in text


def test_pyproject_packages_every_package_and_the_shipped_data() -> None:
    # The fast guard of the wheel test above: a new package must be listed.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    packages = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "kdcache").rglob("__init__.py")}
    assert packages <= listed, f"not in pyproject's packages: {sorted(packages - listed)}"
    assert config["package-dir"] == {"kdcache_cli": "cli", "kdcache._data": "data"}
    assert {"kdcache_cli", "kdcache._data"} <= listed
    assert "*.npz" in config["package-data"]["kdcache._data"]
    assert "recipes/*.json" in config["package-data"]["kdcache"]

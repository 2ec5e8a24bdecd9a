"""No silent defaults through the CLI: an option that does not apply to the chosen mode is refused (the CLI
passes "not given" as None, so the library can tell), a weightless zoo teacher needs --random-init, and the
options new in this version reach the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, distill_args, precompute_args, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
PRECOMPUTE = {"data": DATA, "seed": 3}
DISTILL = {"data": DATA, "val_data": VAL}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("modes") / "store.zarr"
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert code == 0, text
    return out


@pytest.mark.parametrize(("option", "value"), [
    ("--view-seed", "3"), ("--views", "2"), ("--recipe", "none"), ("--weights", "teacher.pt"),
])
def test_online_only_options_are_refused_with_a_store(tmp_path: Path, store: Path, option: str, value: str) -> None:
    code, text = run_cli("distill", store, *distill_args(tmp_path / "run", **DISTILL)[1:], option, value)
    assert_one_line_error(code, text, option, exit_code=2)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_teacher_name_is_refused_online(tmp_path: Path) -> None:
    code, text = run_cli(*distill_args(tmp_path / "run", "--teacher", TINY, "--views", "2", "--teacher-name", "t",
                                       **DISTILL))
    assert_one_line_error(code, text, "--teacher-name", exit_code=2)


@pytest.mark.parametrize("both", [False, True])
def test_distill_needs_exactly_one_of_store_and_teacher(tmp_path: Path, store: Path, both: bool) -> None:
    extra = [store, "--teacher", TINY, "--views", "2"] if both else []
    code, text = run_cli("distill", *extra, *distill_args(tmp_path / "run", **DISTILL)[1:])
    assert_one_line_error(code, text, "--teacher", exit_code=2)


def test_online_view_seed_reaches_the_run_record(tmp_path: Path) -> None:
    out = tmp_path / "online"
    code, text = run_cli(*distill_args(out, "--teacher", TINY, "--views", "2", "--recipe", RECIPE, "--view-seed", "3",
                                       "--seed", "9", **DISTILL))
    assert code == 0, text
    args = json.loads((out / "run.json").read_text())["args"]
    assert (args["view_seed"], args["seed"], args["views"]) == (3, 9, 2)
    assert args["store"] is None and args["teacher_name"] is None  # not given: None, not a default


def test_zoo_teacher_without_weights_needs_random_init(tmp_path: Path) -> None:
    out = tmp_path / "random.zarr"
    code, text = run_cli(*precompute_args(out, teacher="kdcache:tiny_cnn", **PRECOMPUTE))
    assert_one_line_error(code, text, "--random-init")
    assert not (out / "zarr.json").exists()
    code, text = run_cli(*precompute_args(out, "--random-init", teacher="kdcache:tiny_cnn", **PRECOMPUTE))
    assert code == 0, text
    code, text = run_cli("info", out, "--json")
    assert code == 0 and '"random_init": true' in text, text

"""One CLI vocabulary: every choice is listed in `--help` and checked by Click with the library's own
names; a store that is read is the positional STORE; the old spellings of the last version are refused."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdcache_cli.main import app
from kdcache_cli.options import Codec, Device, Loss, Optimizer, Schedule, ViewPolicy, recipe_presets
from tests.cli_helpers import assert_one_line_error, distill_args, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")

TRAINING = {"--optimizer": Optimizer, "--schedule": Schedule, "--device": Device}
CHOICES: dict[str, dict[str, type[Enum]]] = {
    "precompute": {"--codec": Codec, "--device": Device},  # --encoding is free text: tests/test_encodings.py
    "distill": {"--loss": Loss, "--view-policy": ViewPolicy, **TRAINING},
    "train-teacher": TRAINING,
}
WITH_RECIPE = ["precompute", "distill", "train-teacher"]


def help_text(command: str) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})  # no wrapping
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", sorted(CHOICES))
def test_help_lists_every_choice(command: str) -> None:
    text = help_text(command)
    for option, enum in CHOICES[command].items():
        assert option in text
        assert "|".join(str(m.value) for m in enum) in text, (option, text)


@pytest.mark.parametrize("command", WITH_RECIPE)
def test_help_lists_the_recipe_presets(command: str) -> None:
    text = help_text(command)
    assert "--recipe" in text
    for preset in ("cifar", "imagenet", "fashion-mnist", "none"):
        assert preset in text
    assert "dataset's own recipe" in text  # no silent fashion-mnist default


@pytest.mark.parametrize(("command", "option"), [(c, o) for c, opts in CHOICES.items() for o in opts])
def test_a_value_not_listed_is_a_usage_error(command: str, option: str) -> None:
    assert_one_line_error(*run_cli(command, option, "bogus"), option, "bogus", exit_code=2)


def test_choices_are_the_librarys_names() -> None:
    """The CLI spells the choices itself (so --help needs no torch); they must not drift from the library."""
    from kdcache import losses
    from kdcache.engine import OPTIMIZERS, SCHEDULES
    from kdcache.distill.cached_rows import VIEW_POLICIES
    from kdcache.store import CODECS
    from kdcache.views import list_presets

    def values(enum: type[Enum]) -> list[str]:
        return [str(m.value) for m in enum]

    assert values(Codec) == list(CODECS)
    assert values(Optimizer) == list(OPTIMIZERS)
    assert values(Schedule) == list(SCHEDULES)
    assert values(ViewPolicy) == list(VIEW_POLICIES)
    assert values(Loss) == losses.names()
    assert recipe_presets() == sorted(list_presets())


@pytest.mark.parametrize("command", ["info", "verify", "stats", "distill"])
def test_a_store_that_is_read_is_the_positional_store(command: str) -> None:
    usage = next(line for line in help_text(command).splitlines() if "Usage:" in line)
    assert "STORE" in usage


@pytest.mark.parametrize("command", ["precompute", "verify", "stats", "distill"])
def test_a_teacher_inside_a_store_is_teacher_name(command: str) -> None:
    text = help_text(command)
    assert "--teacher-name" in text
    if command in ("verify", "stats"):  # --teacher NAME (a removed spelling) is not an option here
        assert "--teacher " not in text.replace("--teacher-name", "")


# --- removed spellings, end to end on a small store ---------------------------------------------
# The deprecated spellings of the last version (distill --store, verify/stats --teacher NAME, stats --grid
# 1,2,4, quickstart --workdir) were promised for one version only: each is now a one-line usage error.


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vocab") / "store.zarr"
    code, text = run_cli("precompute", "--data", DATA, "--teacher", TINY, "--views", "2", "--seed", "3",
                         "--recipe", RECIPE, "--out", out, "--chunk-rows", "64", "--encoding", "float32")
    assert code == 0, text
    return out


def recorded_grids(store: Path) -> list[list[float]]:
    code, text = run_cli("info", store, "--json")
    assert code == 0, text
    found = [v for v in _walk(json.loads(text)) if isinstance(v, dict) and "grids" in v]
    assert found, text
    return [[float(g) for g in grid] for grid in found[0]["grids"]]


def _walk(obj: object):  # every dict and list inside a JSON value
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def test_stats_old_teacher_and_comma_grid_are_refused(store: Path) -> None:
    code, text = run_cli("stats", store, "--teacher-name", "tiny", "--grid", "1", "--grid", "2", "--grid", "4")
    assert code == 0, text
    assert recorded_grids(store) == [[1.0, 2.0, 4.0]]

    assert_one_line_error(*run_cli("stats", store, "--teacher", "tiny"), "--teacher", exit_code=2)
    # The comma grid is refused with the user's own values spelled the current way, and nothing is added.
    assert_one_line_error(*run_cli("stats", store, "--teacher-name", "tiny", "--grid", "1,3,5"),
                          "--grid 1 --grid 3 --grid 5", exit_code=2)
    assert recorded_grids(store) == [[1.0, 2.0, 4.0]]


def test_verify_old_teacher_spelling_is_refused(store: Path) -> None:
    assert_one_line_error(*run_cli("verify", store, "--teacher", "tiny"), "--teacher", exit_code=2)
    code, text = run_cli("verify", store, "--teacher-name", "tiny")
    assert code == 0, text


def test_distill_old_store_option_is_refused(tmp_path: Path, store: Path) -> None:
    assert_one_line_error(*run_cli(*distill_args(tmp_path / "old", "--store", store, data=DATA, val_data=VAL,
                                                 loss="kd")), "--store",
                          exit_code=2)
    assert not (tmp_path / "old").exists()  # refused before anything is written


def test_quickstart_old_workdir_spelling_is_refused(tmp_path: Path) -> None:
    assert_one_line_error(*run_cli("quickstart", "--workdir", tmp_path / "qs"), "--workdir", exit_code=2)
    assert not (tmp_path / "qs").exists()

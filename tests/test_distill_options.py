"""`kdcache distill` option checks: bad values and options of the other mode are one-line errors, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.cli_helpers import assert_one_line_error, run_cli
from tests.helpers import tiny
from tests.cli_helpers import RECIPE, TINY
from tests.stores import DATA, VAL, args_of  # the session `store` fixture (tests/conftest.py)


@pytest.mark.parametrize("option,value", [("--workers", -1), ("--batch-size", 0), ("--epochs", 0), ("--lr", 0),
                                          ("--weight-decay", -1), ("--momentum", 1.5)])
def test_bad_option_values_are_one_line_usage_errors(tmp_path: Path, store: Path, option: str,
                                                     value: object) -> None:
    args = args_of(tmp_path / "run", store)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    assert_one_line_error(*run_cli(*args), option, exit_code=2)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--views", 3], "--views"), (["--recipe", RECIPE], "--recipe"), (["--weights", "t.pt"], "--weights"),
    (["--view-seed", 4], "--view-seed"),
])
def test_online_options_with_a_store_are_refused(tmp_path: Path, store: Path, extra: list, needle: str) -> None:
    assert_one_line_error(*run_cli(*args_of(tmp_path / "run", store), *extra), needle, exit_code=2)
    assert not (tmp_path / "run").exists()


def test_store_options_online_are_refused(tmp_path: Path) -> None:
    args = args_of(tmp_path / "run", None, "kd", "multistep", "--teacher-name", "tiny")
    assert_one_line_error(*run_cli(*args), "--teacher-name", exit_code=2)
    assert not (tmp_path / "run").exists()


def test_view_policy_with_one_view_is_refused(tmp_path: Path) -> None:
    args = args_of(tmp_path / "run", None, "kd", "multistep", "--view-policy", "random")
    args[args.index("--views") + 1] = 1
    assert_one_line_error(*run_cli(*args), "--view-policy", exit_code=2)
    assert not (tmp_path / "run").exists()


def test_online_resume_compares_the_teacher_weights_by_content(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save(tiny(4, 1).state_dict(), weights)
    out = tmp_path / "run"

    def args(w: Path) -> list:
        return args_of(out, None, "kd", "constant", "--weights", w, "--epochs", 1)

    assert run_cli(*args(weights))[0] == 0
    moved = tmp_path / "moved.pt"
    weights.rename(moved)  # same bytes elsewhere: the same teacher
    code, text = run_cli(*args(moved), "--resume")
    assert code == 0 and "already done" in text, text
    changed = {k: v + 1 for k, v in torch.load(moved, weights_only=True).items()}
    torch.save(changed, moved)
    assert_one_line_error(*run_cli(*args(moved), "--resume"), "teacher data this run reads changed")


def test_run_json_records_whether_the_kernels_were_deterministic(tmp_path: Path, store: Path) -> None:
    out = tmp_path / "run"
    code, text = run_cli("distill", store, "--data", DATA, "--val-data", VAL, "--student", TINY, "--loss", "kd",
                         "--epochs", 1, "--out", out, "--batch-size", 64)
    assert code == 0, text
    det = json.loads((out / "run.json").read_text())["determinism"]
    assert det["deterministic"] is True and det["deterministic_algorithms"] is True and det["device"] == "cpu"


def test_online_distill_prints_the_default_recipe_once(tmp_path: Path) -> None:
    code, text = run_cli("distill", "--teacher", TINY, "--views", 1, "--data", DATA, "--val-data", VAL,
                         "--student", TINY, "--loss", "kd", "--epochs", 1, "--out", tmp_path / "run")
    assert code == 0, text
    assert text.count("recipe: ") == 1, text


def test_online_refuses_a_loss_that_requires_store_statistics_naming_it(tmp_path: Path) -> None:
    assert_one_line_error(*run_cli("distill", "--teacher", TINY, "--views", 1, "--data", DATA, "--val-data", VAL,
                                   "--student", TINY, "--loss", "fgcr", "--epochs", 1, "--out", tmp_path / "r"),
                          "class_table", exit_code=2)

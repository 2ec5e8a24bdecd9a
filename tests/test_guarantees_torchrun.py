"""docs/scaling.md, "When a rank fails": commands that do not split their work (info, verify, stats,
convert, sweep, report, quickstart) refuse to run under torchrun, in one line, rather than run N times
over the same files.

No torchrun job is started: the environment torchrun gives a rank (RANK, LOCAL_RANK, WORLD_SIZE, as
kdcache.distributed.from_env reads it) is set in this process, and joining a process group is made to
fail the test, so the refusal must come before any attempt to.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as dist
import zarr

import kdcache.quickstart
from tests.cli_helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torchrun") / "s.zarr"
    code, text = run_cli("precompute", "--data", DATA, "--teacher", TINY, "--views", "1", "--seed", "11",
                         "--recipe", RECIPE, "--out", out, "--chunk-rows", "64", "--encoding", "float32")
    assert code == 0, text
    return out


def commands(store: Path, tmp: Path) -> dict[str, list[object]]:
    """Each command with arguments it would run on (and write with) outside torchrun."""
    return {
        "info": ["info", store],
        "verify": ["verify", store],
        "stats": ["stats", store],
        "convert": ["convert", store, "--encoding", "int8"],
        "sweep": ["sweep", store, "--data", DATA, "--val-data", VAL, "--student", TINY, "--run", "kd:kd",
                  "--epochs", 1, "--out", tmp / "sweep"],
        "report": ["report", "--out", tmp / "report", tmp / "no-run"],
        "quickstart": ["quickstart", "--out", tmp / "quickstart", "--epochs", 1],
    }


@pytest.fixture
def as_rank_0_of_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process looks like rank 0 of a 2-process torchrun job; joining its group fails the test."""
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)

    def no_group(*args: object, **kwargs: object) -> None:
        raise AssertionError("a command that refuses torchrun tried to join the process group")

    monkeypatch.setattr(dist, "init_process_group", no_group)
    # Should the refusal break, quickstart would run its whole pipeline: fail at once instead.
    monkeypatch.setattr(kdcache.quickstart, "run_quickstart", no_group)


@pytest.mark.parametrize("name", ["info", "verify", "stats", "convert", "sweep", "report", "quickstart"])
def test_a_command_that_does_not_split_its_work_refuses_torchrun_in_one_line(
        store: Path, tmp_path: Path, as_rank_0_of_2: None, name: str) -> None:
    before = zarr.open_group(store, mode="r").attrs["kdcache"]
    code, text = run_cli(*commands(store, tmp_path)[name])
    assert_one_line_error(code, text, f"`kdcache {name}` does not run under torchrun", "WORLD_SIZE=2",
                          exit_code=2)
    assert not dist.is_initialized()
    assert zarr.open_group(store, mode="r").attrs["kdcache"] == before  # stats, convert: nothing written
    assert not any(tmp_path.iterdir())  # sweep, report, quickstart: no output directory


def test_the_same_commands_run_outside_torchrun(store: Path, tmp_path: Path) -> None:
    """The control: in one process (no WORLD_SIZE) the cheap ones run on these arguments."""
    for name in ("info", "verify"):
        code, text = run_cli(*commands(store, tmp_path)[name])
        assert code == 0, text

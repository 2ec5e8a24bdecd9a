"""`kdcache report`'s refusals name the actual fault: an output it cannot create (not "does not exist"),
a malformed sweep.json (not "a sweep with no student run yet"), nothing to report (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdcache.errors import KdcacheError, RunError
from kdcache.report import write_report
from tests.cli_helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=16,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 1-epoch distill run (a sweep student's name)."""
    tmp = tmp_path_factory.mktemp("report-errors")
    code, text = run_cli("precompute", "--data", DATA, "--teacher", TINY, "--views", "1", "--out", tmp / "s.zarr")
    assert code == 0, text
    code, text = run_cli("distill", tmp / "s.zarr", "--data", DATA, "--val-data", VAL, "--student", TINY,
                         "--epochs", "1", "--batch-size", "32", "--out", tmp / "sweep" / "kd-s0")
    assert code == 0, text
    return tmp / "sweep" / "kd-s0"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("out", ["/proc/kdcache-report", "/proc/kdcache-report/sub"])
def test_an_output_the_filesystem_refuses_is_named_as_such(run_dir: Path, out: str) -> None:
    code, text = run_cli("report", run_dir, "--out", out)
    assert_one_line_error(code, text, f"cannot create the report directory {out}", "/proc does not accept")
    assert "does not exist" not in text


def test_an_output_that_is_a_file(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine")
    with pytest.raises(KdcacheError, match="exists and is not a directory") as err:
        write_report([run_dir], tmp_path / "f")
    assert "--out" not in str(err.value)  # the Python caller gave no flag
    assert (tmp_path / "f").read_text() == "mine"


@pytest.mark.parametrize("content, problem", [('{"runs": [', "not JSON"), ("[1, 2]", "a JSON list"),
                                              (b"\xff\xfe", "not JSON")])
def test_a_malformed_sweep_json_is_named(run_dir: Path, content: str | bytes, problem: str) -> None:
    record = run_dir.parent / "sweep.json"
    if isinstance(content, bytes):
        record.write_bytes(content)
    else:
        record.write_text(content)
    try:
        code, text = run_cli("report", run_dir.parent, "--out", run_dir.parent / "report")
        assert_one_line_error(code, text, f"{record} is malformed: {problem}", "NAME-sN")
        assert "no student run" not in text
        assert not (run_dir.parent / "report").exists()  # refused before anything is written
        # Without students it is still called malformed, not a sweep that has not started.
        empty = run_dir.parent.parent / "empty-sweep"
        empty.mkdir(exist_ok=True)
        (empty / "sweep.json").write_bytes(record.read_bytes())
        with pytest.raises(RunError, match="malformed"):
            write_report([empty], empty / "report")
    finally:
        record.unlink()


def test_a_sound_sweep_still_reports(run_dir: Path, tmp_path: Path) -> None:
    record = run_dir.parent / "sweep.json"
    record.write_text('{"runs": []}')
    try:
        result = write_report([run_dir.parent], tmp_path / "report")
        assert [s.group for s in result.summaries] == ["kd"]
    finally:
        record.unlink()


def test_nothing_to_report_is_a_usage_error_without_flags_in_the_library(tmp_path: Path) -> None:
    assert_one_line_error(*run_cli("report", "--out", tmp_path / "r"), "nothing to report", "--store", exit_code=2)
    with pytest.raises(KdcacheError, match="nothing to report") as err:
        write_report([], tmp_path / "r")
    assert "--" not in str(err.value)
    assert not (tmp_path / "r").exists()

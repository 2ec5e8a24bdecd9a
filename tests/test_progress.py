"""Progress bars (kdcache.progress): plain log lines when stderr is not a terminal, and a bar that an
error erases instead of leaving it above the error line."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import kdcache.audit
import kdcache.progress as progress
from kdcache.errors import KdcacheError
from tests.cli_helpers import run_cli


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _bar(monkeypatch: pytest.MonkeyPatch, *, terminal: bool) -> tuple[progress.LoggedProgress, Clock, io.StringIO]:
    buf = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buf, force_terminal=terminal, width=120))
    bar = progress.make_progress(unit="views")
    clock = Clock()
    bar.get_time = clock  # type: ignore[method-assign]
    return bar, clock, buf


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kdcache.progress"]


def test_off_a_terminal_a_line_per_ten_percent(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    bar, clock, _ = _bar(monkeypatch, terminal=False)
    with caplog.at_level(logging.INFO, logger="kdcache"), bar:
        task = bar.add_task("precompute t", total=1000, rate="")
        for done in range(50, 1001, 50):  # every 5%, 6 s apart
            clock.now += 6
            bar.update(task, completed=done, rate="8 views/s")
    lines = _lines(caplog)
    assert [line.split("(")[1].split(")")[0] for line in lines] == [f"{p}%" for p in range(10, 100, 10)]
    assert lines[0].startswith("precompute t: 100/1,000 views (10%), 8 views/s, elapsed 0:00:12, ETA ")


def test_off_a_terminal_a_line_per_minute_when_ten_percent_is_slower(monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    bar, clock, _ = _bar(monkeypatch, terminal=False)
    with caplog.at_level(logging.INFO, logger="kdcache"), bar:
        task = bar.add_task("distill", total=10_000, rate="")
        for _ in range(30):  # 10 rows every 10 s: 3% in 5 minutes
            clock.now += 10
            bar.advance(task, 10)
    lines = _lines(caplog)
    assert [line.split("elapsed ")[1][:7] for line in lines] == [f"0:0{m}:00" for m in range(1, 6)], lines
    assert lines[0].startswith("distill: 60/10,000 views (1%)")


def test_a_short_phase_reports_only_its_final_bar(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    bar, clock, buf = _bar(monkeypatch, terminal=False)
    with caplog.at_level(logging.INFO, logger="kdcache"), bar:
        task = bar.add_task("stats", total=10, rate="")
        for done in range(1, 11):
            clock.now += 0.1
            bar.update(task, completed=done)
    assert _lines(caplog) == []
    assert "10/10" in buf.getvalue()  # the final bar, printed when it stops


def test_on_a_terminal_the_bar_alone(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    bar, clock, _ = _bar(monkeypatch, terminal=True)
    with caplog.at_level(logging.INFO, logger="kdcache"), bar:
        task = bar.add_task("precompute t", total=100, rate="")
        for done in range(10, 101, 10):
            clock.now += 70
            bar.update(task, completed=done)
    assert _lines(caplog) == []


def test_a_disabled_bar_logs_nothing(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(progress, "console", Console(file=io.StringIO(), force_terminal=False))
    bar = progress.make_progress(enabled=False)
    with caplog.at_level(logging.INFO, logger="kdcache"), bar:
        task = bar.add_task("x", total=10, rate="")
        bar.get_time = lambda: 1e9  # type: ignore[method-assign]
        bar.update(task, completed=5)
    assert _lines(caplog) == []


# --- an error erases the bar ------------------------------------------------------------------------


@pytest.mark.parametrize("terminal", [False, True])
def test_an_error_erases_the_bar(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    bar, clock, buf = _bar(monkeypatch, terminal=terminal)
    with pytest.raises(KdcacheError):
        with bar:
            task = bar.add_task("precompute t", total=100, rate="")
            bar.update(task, completed=40)
            bar.refresh()
            raise KdcacheError("boom")
    screen = buf.getvalue()
    if terminal:  # drawn while live, then the cursor moves back up over it and the line is cleared
        assert "40/100" in screen and screen.endswith("\x1b[2K")
    else:  # off a terminal the bar is drawn only when it stops: not at all here
        assert screen == ""


def test_an_error_line_after_a_bar_stands_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def store_info(store: str) -> dict[str, Any]:
        with progress.make_progress() as bar:
            task = bar.add_task("verify", total=100, rate="")
            bar.update(task, completed=40)
            raise KdcacheError("chunk (0, 3) of 'tiny' is damaged")

    monkeypatch.setattr(kdcache.audit, "store_info", store_info)
    code, text = run_cli("info", "x")
    assert code == 1
    assert text == "error: chunk (0, 3) of 'tiny' is damaged\n"


def test_an_ok_bar_stays(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def store_info(store: str) -> dict[str, Any]:
        with progress.make_progress() as bar:
            bar.update(bar.add_task("verify", total=100, rate=""), completed=100)
        return {}

    monkeypatch.setattr(kdcache.audit, "store_info", store_info)
    monkeypatch.setattr(kdcache.audit, "format_info", lambda description: "described")
    code, text = run_cli("info", "x")
    assert code == 0 and "verify" in text and "100/100" in text, text


# --- torchrun: rank 0's bar ends at the job's total ------------------------------------------------


@pytest.mark.slow
def test_a_torchrun_precompute_bar_ends_at_100_percent(tmp_path: Path) -> None:
    from tests.dist_helpers import torchrun

    data = "synthetic:samples=512,classes=4,size=12,channels=1,seed=3"
    recipe = str(Path(__file__).resolve().parent / "data" / "recipe-small.json")
    # Rank 1's teacher is slow: rank 0 finishes its chunks first, while rank 1 still scores its own.
    code, text = torchrun(2, "precompute", "--data", data, "--teacher", "import:tests.progress_helpers:slow_on_rank1",
                          "--views", "2", "--recipe", recipe, "--chunk-rows", "64", "--batch-size", "64",
                          "--out", tmp_path / "s.zarr")
    assert code == 0, text
    bars = [line for line in text.splitlines() if line.startswith("precompute slow_on_rank1 ")]
    assert bars, text
    assert " 100% " in bars[-1], text  # it stopped at 50-90% while rank 1 still worked
    assert "1,024 views scored" in text

"""The CLI side of a quiet library: kdcache's log records and warnings become plain lines on stderr,
printed through the progress bars' console; a kdcache bug keeps its traceback."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from rich.console import Console

import kdcache.audit
import kdcache.progress
from kdcache.errors import ApproximateEncodingWarning, KdcacheBug, KdcacheError, KdcacheWarning
from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("kdcache.test_reporting")


def _info_does(monkeypatch: pytest.MonkeyPatch, body: Any) -> None:
    """`kdcache info X` runs ``body`` as its library call (and prints nothing else)."""
    def store_info(store: str) -> dict[str, Any]:
        body()
        return {}

    monkeypatch.setattr(kdcache.audit, "store_info", store_info)
    monkeypatch.setattr(kdcache.audit, "format_info", lambda description: "described")


def test_library_info_records_print_as_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    _info_does(monkeypatch, lambda: (log.info("recipe: cifar (the default for [1, 2])"), log.debug("not shown")))
    code, text = run_cli("info", "x")
    assert code == 0, text
    assert text.splitlines() == ["recipe: cifar (the default for [1, 2])", "described"]


def test_library_warning_records_are_prefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    _info_does(monkeypatch, lambda: log.warning("3 chunk(s) rewritten"))
    code, text = run_cli("info", "x")
    assert code == 0, text
    assert text.splitlines()[0] == "warning: 3 chunk(s) rewritten"


def test_a_kdcache_warning_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _info_does(monkeypatch, lambda: warnings.warn("rows decoded at T=1", ApproximateEncodingWarning, stacklevel=2))
    code, text = run_cli("info", "x")
    assert code == 0, text
    assert text.splitlines() == ["warning: rows decoded at T=1", "described"]


def test_each_command_shows_a_kdcache_warning_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python shows a warning once per code location; each command is a fresh start.
    _info_does(monkeypatch, lambda: warnings.warn("again", KdcacheWarning, stacklevel=2))
    for _ in range(2):
        code, text = run_cli("info", "x")
        assert code == 0 and text.count("warning: again") == 1, text


def test_other_warnings_keep_pythons_format(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(warnings, "showwarning",
                        lambda message, category, *rest: shown.append(f"{category.__name__}: {message}"))
    _info_does(monkeypatch, lambda: warnings.warn("someone else's", UserWarning, stacklevel=2))
    code, text = run_cli("info", "x")
    assert code == 0, text
    assert "warning: someone else's" not in text
    assert shown == ["UserWarning: someone else's"]
    assert warnings.showwarning is not None and warnings.showwarning.__name__ == "<lambda>"  # restored


def test_lines_go_through_the_progress_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # A message printed while a bar is live must land above the bar, not inside its line: rich does
    # that only for output printed through the bar's own console.
    buf = io.StringIO()
    monkeypatch.setattr(kdcache.progress, "console", Console(file=buf, force_terminal=True, width=100))

    def body() -> None:
        with kdcache.progress.make_progress() as bar:
            task = bar.add_task("precompute t", total=10, rate="")
            bar.update(task, completed=5)
            log.info("a note while the bar is live")
            warnings.warn("a warning while the bar is live", KdcacheWarning, stacklevel=2)
            bar.update(task, completed=10)

    _info_does(monkeypatch, body)
    code, text = run_cli("info", "x")
    assert code == 0, text
    assert "a note" not in text  # not written around the console
    screen = buf.getvalue()
    assert "a note while the bar is live" in screen
    assert "warning: a warning while the bar is live" in screen


def test_the_logger_is_left_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("kdcache")
    before = (list(logger.handlers), logger.level, logger.propagate)
    _info_does(monkeypatch, lambda: log.info("x"))
    for _ in range(3):
        code, text = run_cli("info", "x")
        assert code == 0 and text.count("x\n") == 1, text
    assert (list(logger.handlers), logger.level, logger.propagate) == before


def test_the_library_alone_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # Without the CLI, kdcache's logger has no handler of its own: INFO goes nowhere unless the caller
    # configures logging (Python's last-resort handler shows WARNING and above only).
    log.info("quiet")
    assert capsys.readouterr().err == ""


# --- a kdcache bug keeps its traceback ----------------------------------------------------------


def test_a_kdcache_bug_is_not_a_user_error() -> None:
    assert not issubclass(KdcacheBug, KdcacheError)


def test_a_kdcache_bug_keeps_its_traceback_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise KdcacheBug("an invariant broke")

    _info_does(monkeypatch, broken)
    from typer.testing import CliRunner

    from kdcache_cli.main import app

    result = CliRunner().invoke(app, ["info", "x"])
    assert isinstance(result.exception, KdcacheBug), result.output
    assert "error:" not in result.output


def test_a_kdcache_bug_prints_a_traceback() -> None:
    script = (
        "import sys, kdcache.audit\n"
        "from kdcache.errors import KdcacheBug\n"
        "def broken(store):\n"
        "    raise KdcacheBug('an invariant broke')\n"
        "kdcache.audit.store_info = broken\n"
        "from kdcache_cli.main import app\n"
        "sys.argv = ['kdcache', 'info', 'x']\n"
        "app()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "kdcache.errors.KdcacheBug: an invariant broke" in done.stderr
    assert "error: an invariant broke" not in done.stderr


# --- internal invariants are KdcacheBug, not user errors ------------------------------------------


def test_a_sweep_reader_at_two_temperatures_is_a_bug() -> None:
    from kdcache.distill.logit_sources import CachedLogits

    sources = [SimpleNamespace(row_arg={}, decode_temperature=t) for t in (1.0, 4.0)]
    with pytest.raises(KdcacheBug, match="temperatures"):
        CachedLogits.rows_for(SimpleNamespace(), sources)  # type: ignore[arg-type]


def test_unread_rows_are_a_bug() -> None:
    from kdcache.distill.logit_sources import CachedLogits

    with pytest.raises(KdcacheBug, match="not read"):
        CachedLogits.logits(SimpleNamespace(), {}, None)  # type: ignore[arg-type]
    this = SimpleNamespace(static={}, row_arg={"isats_tau": "tau_star"})
    with pytest.raises(KdcacheBug, match="isats_tau"):
        CachedLogits.call_inputs(this, {"teacher_logits": torch.zeros(1, 2)})  # type: ignore[arg-type]


def test_a_tau_off_the_grid_is_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdcache import losses
    from kdcache.stats.providers import _TauAcc

    acc = _TauAcc([(1.0, 2.0)], "isats_tau")
    with pytest.raises(KdcacheBug, match="begin"):
        acc.update(0, 0, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    acc.writer = SimpleNamespace(write_rows=lambda *a: None)  # type: ignore[assignment]
    monkeypatch.setattr(losses, "isats_tau_star", lambda logits, labels, grid: torch.full((2,), 7.0))
    with pytest.raises(KdcacheBug, match="not on the grid"):
        acc.update(0, 0, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))

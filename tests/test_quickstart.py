"""The quickstart end to end (slow: trains a teacher for real; opt in with `-m slow`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdcache.quickstart import run_quickstart
from kdcache_cli.tables import quickstart_table


@pytest.mark.slow
def test_quickstart_runs_and_prints_the_table(tmp_path: Path) -> None:
    result = run_quickstart(tmp_path / "qs", student_epochs=2, progress=False)
    table = quickstart_table(result)
    for method in ("ce", "kd", "nkd", "isats"):
        assert result.row(method, "cached").val_top1 > 0.3
    assert result.row("kd", "online").val_top1 > 0.3
    assert result.teacher_top1 > 0.8
    assert "speed-up of cached over online KD" in table
    # Its report: the plot it prints is a PNG, and the page embeds it.
    assert result.plot is not None and result.plot.read_bytes()[:4] == b"\x89PNG"
    assert f"plot: {result.plot}" in table and result.plot.name in result.report.read_text()
    # Re-running reuses the teacher and the (complete) store.
    again = run_quickstart(tmp_path / "qs", student_epochs=1, progress=False)
    assert again.teacher_top1 == result.teacher_top1

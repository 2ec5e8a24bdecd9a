"""The quickstart end to end (slow: trains a teacher for real; opt in with `-m slow`).

One run at the quickstart's own sizes serves every test here, and its table is compared with the one
docs/distill.md shows ("What the quickstart prints", written by `benchmarks/run_all.py --only
quickstart`): the accuracies are deterministic, so the page must show the ones today's code gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kdcache.quickstart import QuickstartResult, run_quickstart
from kdcache_cli.tables import quickstart_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import run_all  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> QuickstartResult:
    return run_quickstart(tmp_path_factory.mktemp("qs") / "qs", progress=False)


def test_quickstart_runs_and_prints_the_table(quickstart: QuickstartResult) -> None:
    result = quickstart
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
    again = run_quickstart(result.workdir, student_epochs=1, progress=False)
    assert again.teacher_top1 == result.teacher_top1


def test_the_docs_show_the_accuracies_the_quickstart_gives(quickstart: QuickstartResult) -> None:
    doc = (ROOT / "docs" / "distill.md").read_text()
    block = next((text for name, text in run_all.BLOCK.findall(doc) if name == "quickstart"), None)
    assert block is not None, "docs/distill.md lost its generated quickstart block"
    regenerate = "run `python benchmarks/run_all.py --only quickstart` and commit docs/distill.md"
    try:
        shown = run_all.parse_quickstart(block)
    except ValueError:
        pytest.fail(f"docs/distill.md shows no quickstart table yet: {regenerate}")
    got = run_all.parse_quickstart(quickstart_table(quickstart))
    assert (shown["teacher_top1"], shown["val_top1"], shown["vs_ce"]) == (
        got["teacher_top1"], got["val_top1"], got["vs_ce"]), f"the quickstart's accuracies changed: {regenerate}"
    # What the page says of the table.
    ce = quickstart.row("ce", "cached").val_top1
    assert quickstart.row("isats", "cached").val_top1 <= ce, "docs/distill.md says ISATS does not beat CE here"

"""`kdcache report`: valid, non-trivial PNGs and a page that embeds them; numbers from the runs; bad input is one line.

The runs and the store are tiny (96 synthetic 12x12 images, a random-init
teacher), so the whole module costs a few seconds.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from kdcache.distill import DistillConfig, distill
from kdcache.engine import OptimConfig
from kdcache.precompute import TeacherRequest, precompute
from kdcache.report import load_runs, summarise
from kdcache.stats import compute_stats
from tests.cli_helpers import assert_one_line_error, run_cli

DATA = "synthetic:samples=96,classes=4,size=12,channels=1,seed=3"
VAL = "synthetic:samples=48,classes=4,size=12,channels=1,seed=3,split=test"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with statistics and 2 methods x 2 seeds of 3-epoch runs, named as sweep names them."""
    root = tmp_path_factory.mktemp("report")
    precompute(data=DATA, teachers=[TeacherRequest("kdcache:tiny_cnn", random_init=True)], views=3, seed=0,
               out=root / "store.zarr", progress=False)
    compute_stats(root / "store.zarr", tau0=[1.0, 3.0], progress=False)
    # A store without statistics, for the error test.
    precompute(data=DATA, teachers=[TeacherRequest("kdcache:tiny_cnn", random_init=True)], views=1, seed=0,
               out=root / "bare.zarr", progress=False)
    for loss in ("ce", "kd"):
        for seed in (0, 1):
            distill(DistillConfig(data=DATA, val_data=VAL, student="kdcache:mlp", loss=loss, epochs=3, seed=seed,
                                  out=root / "runs" / f"{loss}-s{seed}", store=str(root / "store.zarr"),
                                  optim=OptimConfig(epochs=3, lr=0.05, schedule="cosine")), progress=False)
    return root


def runs_of(workdir: Path) -> list[Path]:
    return sorted((workdir / "runs").iterdir())


def assert_png(path: Path) -> None:
    """A real PNG of a drawn figure: the signature, a plausible size, decodable, and not one flat colour."""
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    assert path.stat().st_size > 5_000, (path, path.stat().st_size)
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= 200 and pixels.shape[1] >= 300, (path, pixels.shape)
    assert float(np.std(pixels[..., :3])) > 0.02, f"{path} is (nearly) blank"


def test_report_writes_every_png_and_a_page_that_embeds_them(workdir: Path) -> None:
    out = workdir / "out"
    code, text = run_cli("report", *runs_of(workdir), "--store", workdir / "store.zarr", "--out", out)
    assert code == 0, text
    expected = {"curves.png", "final.png", "teacher_accuracy.png", "tau_star.png",
                "class_table_tau0-1.png", "class_table_tau0-3.png"}
    assert {p.name for p in out.glob("*.png")} == expected
    for name in expected:
        assert_png(out / name)
        assert str(out / name) in text  # the command says where each figure is
    page = (out / "report.md").read_text()
    assert f"report: {out / 'report.md'}" in text
    embedded = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page))
    assert embedded == expected  # every figure is on the page, and the page names no missing file


def test_the_table_is_mean_and_std_of_each_methods_seeds(workdir: Path) -> None:
    out = workdir / "out-table"
    code, text = run_cli("report", *runs_of(workdir), "--out", out)
    assert code == 0, text
    assert not (out / "tau_star.png").exists()  # no --store: no store figures
    page = (out / "report.md").read_text()
    for loss in ("ce", "kd"):
        finals = [json.loads((workdir / "runs" / f"{loss}-s{s}" / "metrics.jsonl").read_text().splitlines()[-1])
                  ["val_top1"] for s in (0, 1)]
        mean, std = 100 * statistics.fmean(finals), 100 * statistics.stdev(finals)
        row = next(line for line in page.splitlines() if line.startswith(f"| {loss} |"))
        assert f"| 2 | {mean:.2f} ± {std:.2f} |" in row, row
    summaries = {s.group: s for s in summarise(load_runs(runs_of(workdir)))}
    assert set(summaries) == {"ce", "kd"} and len(summaries["kd"].finals) == 2


def test_a_run_still_going_is_reported_and_named(workdir: Path, tmp_path: Path) -> None:
    import shutil

    running = tmp_path / "kd-s5"
    shutil.copytree(workdir / "runs" / "kd-s0", running)
    (running / "summary.json").unlink()
    code, text = run_cli("report", running, "--out", tmp_path / "out")
    assert code == 0, text
    assert "Still running (last logged epoch shown): kd-s5" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("case", ["missing", "not-a-run", "bad-metrics", "empty-metrics", "no-stats", "nothing",
                                  "out-is-a-file", "same-name"])
def test_bad_input_is_one_line_and_writes_nothing(workdir: Path, tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    run = tmp_path / "runs" / "x-s0"
    args: list[object] = []
    exit_code = 1
    if case == "missing":
        args, needle = [tmp_path / "nope"], "is not a directory"
    elif case == "not-a-run":
        run.mkdir(parents=True)
        args, needle = [run], "has no run.json and metrics.jsonl"
    elif case in ("bad-metrics", "empty-metrics"):
        import shutil

        shutil.copytree(workdir / "runs" / "kd-s0", run)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        body = "" if case == "empty-metrics" else "\n".join([lines[0], "{not json", lines[2]]) + "\n"
        (run / "metrics.jsonl").write_text(body)
        args, needle = [run], ("no finished epoch yet" if case == "empty-metrics" else "line 2 is not an epoch record")
    elif case == "no-stats":
        args, needle = [*runs_of(workdir), "--store", workdir / "bare.zarr"], "run `kdcache stats"
    elif case == "nothing":
        args, needle, exit_code = [], "nothing to report", 2
    elif case == "out-is-a-file":
        out.write_text("x")
        args, needle = [*runs_of(workdir)], "is not a directory; choose another --out"
    else:
        other = tmp_path / "elsewhere" / "kd-s0"
        import shutil

        shutil.copytree(workdir / "runs" / "kd-s0", other)
        args, needle = [workdir / "runs" / "kd-s0", other], "both named 'kd-s0'"
    code, text = run_cli("report", *args, "--out", out)
    assert_one_line_error(code, text, needle, exit_code=exit_code)
    assert out.is_file() if case == "out-is-a-file" else not out.exists()


@pytest.mark.parametrize("store", ["store.zarr", "bare.zarr"])
def test_sweep_writes_its_report(workdir: Path, tmp_path: Path, store: str) -> None:
    out = tmp_path / "sweep"
    code, text = run_cli("sweep", workdir / store, "--data", DATA, "--val-data", VAL, "--student", "kdcache:mlp",
                         "--run", "ce:ce", "--run", "kd:kd:temperature=2", "--init-seed", 0, "--init-seed", 1,
                         "--epochs", 1, "--out", out)
    assert code == 0, text
    page = out / "report" / "report.md"
    assert f"plots in {page}" in " ".join(text.split())  # the printed line may wrap
    for name in ("curves.png", "final.png"):
        assert_png(out / "report" / name)
    body = page.read_text()
    assert "| ce | ce | defaults | 2 |" in body and "| kd | kd | temperature=2 | 2 |" in body
    if store == "store.zarr":
        assert_png(out / "report" / "tau_star.png")
    else:  # no statistics: students only, and the page says how to add the store figures
        assert not (out / "report" / "tau_star.png").exists() and "kdcache stats" in body


def test_accuracy_vs_views_plot_is_a_real_png(tmp_path: Path) -> None:
    from kdcache.report.plots import accuracy_vs_views

    series = {"cycle": {1: [0.80, 0.81, 0.79], 2: [0.82, 0.83, 0.81], 16: [0.85]},
              "random": {2: [0.83, 0.84, 0.82], 16: [0.86, 0.85, 0.87]}}
    path = accuracy_vs_views(series, tmp_path / "k.png")
    assert_png(path)

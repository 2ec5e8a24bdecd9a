"""`kdcache report`: valid, non-trivial PNGs and a page that embeds them; the numbers behind every plot equal an
independent reading of the runs and the store; runs are grouped only with comparable runs; bad input is one line.

The runs and the stores are tiny (96 synthetic 12x12 images, untrained
teachers), so the whole module costs a few seconds.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from torch import nn

from kdcache import losses
from kdcache.distill.run import DistillConfig, distill
from kdcache.engine import OptimConfig
from kdcache.precompute.run import TeacherRequest, precompute
from kdcache.report import load_runs, read_store_stats, summarise
from kdcache.report.plots import tau_star_bars
from kdcache.stats import compute_stats
from kdcache.store import Store
from kdcache.store.stat_io import open_stat
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.helpers import tiny

DATA = "synthetic:samples=96,classes=4,size=12,channels=1,seed=3"
VAL = "synthetic:samples=48,classes=4,size=12,channels=1,seed=3,split=test"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]
# Neither 0.3 nor 1.2 is a float32: the stored tau* (float32) must still count under these grid values.
GRID = [0.3, 1.2, 8.0]


class _Scaled(nn.Module):
    def __init__(self, net: nn.Module, scale: float) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(x)


def confident(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """tests.helpers:tiny with its logits x30: confident rows, so ISATS picks every value of GRID somewhere."""
    return _Scaled(tiny(num_classes, in_channels), 30.0)


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


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose teacher's accuracy differs per view and whose tau* uses every value of GRID."""
    out = tmp_path_factory.mktemp("grid") / "grid.zarr"
    precompute(data=DATA, teachers=[TeacherRequest("import:tests.test_report:confident")], views=3, seed=0, out=out,
               recipe=str(ROOT / "tests" / "data" / "recipe-small.json"), progress=False)
    compute_stats(out, tau0=[1.0, 0.3], grid=GRID, progress=False)
    return out


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


# --- the numbers behind the plots -------------------------------------------------------------------------------


def _final_of(run: Path) -> float:
    """The last val_top1 metrics.jsonl logs, read independently of kdcache.report."""
    return float(json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val_top1"])


def test_final_accuracy_per_method_is_mean_and_std_of_metrics_jsonl(workdir: Path) -> None:
    summaries = {s.group: s for s in summarise(load_runs(runs_of(workdir)))}
    assert set(summaries) == {"ce", "kd"}
    for loss, s in summaries.items():
        finals = [_final_of(workdir / "runs" / f"{loss}-s{seed}") for seed in (0, 1)]
        assert s.finals == finals and s.n == 2
        assert s.mean == pytest.approx(statistics.fmean(finals), abs=1e-12)
        assert s.std == pytest.approx(statistics.stdev(finals), abs=1e-12)
        # the curves plot each run's whole metrics.jsonl
        for r in s.runs:
            rows = [json.loads(line) for line in (r.path / "metrics.jsonl").read_text().splitlines()]
            assert r.epochs == [row["epoch"] for row in rows] and r.val_top1 == [row["val_top1"] for row in rows]


def test_teacher_accuracy_per_view_equals_argmax_of_the_stored_logits(grid_store: Path) -> None:
    figures = read_store_stats(grid_store)
    store = Store.open(grid_store)
    labels = store.labels()
    correct = np.zeros(store.num_views)
    for view, chunk in store.iter_chunks():
        start, stop = store.grid.bounds(chunk)
        logits = store.read_logits_chunk(figures.teacher, view, chunk).astype(np.float32)
        correct[view] += np.count_nonzero(logits.argmax(axis=1) == labels[start:stop])
    expected = correct / store.num_samples
    assert len(set(expected.tolist())) > 1  # the views differ, so a view mix-up would show
    assert figures.accuracy == pytest.approx(expected.tolist(), abs=1e-7)


def test_tau_histogram_has_one_bar_per_grid_value_counting_the_stored_tau(grid_store: Path) -> None:
    figures = read_store_stats(grid_store)
    store = Store.open(grid_store)
    stored = np.asarray(open_stat(store, figures.teacher, "isats_tau")[...])  # (V, N, 1) float32, read whole
    assert stored.shape == (store.num_views, store.num_samples, 1) and stored.dtype == np.float32
    counts = figures.tau_counts
    assert counts is not None
    assert list(counts) == GRID  # one key per grid value, as recorded (1.2, never 1.2000000476837158)
    assert sum(counts.values()) == store.num_views * store.num_samples
    values, k = np.unique(stored, return_counts=True)
    assert {float(v): int(c) for v, c in zip(values, k)} == {float(np.float32(g)): counts[g] for g in GRID}
    assert all(counts[g] > 0 for g in GRID)  # every grid value is picked somewhere, 0.3 and 1.2 included
    bars = tau_star_bars(counts)
    assert [b[0] for b in bars] == ["0.3", "1.2", "8"]  # distinct labels: no duplicate bar
    assert [b[1] for b in bars] == [counts[g] for g in GRID]
    assert sum(b[2] for b in bars) == pytest.approx(100.0)


def test_tau_off_the_recorded_grid_is_one_line_saying_to_rerun_stats(grid_store: Path) -> None:
    from kdcache.errors import StoreError
    from kdcache.report.page import _tau_counts

    store = Store.open(grid_store)
    with pytest.raises(StoreError, match=r"ISATS tau\* value\(s\) .* not on its grid \[0\.3, 8\.0\]; run `kdcache stats"):
        _tau_counts(store, store.resolve_teacher(None), {"grid": [0.3, 8.0]})  # the rows at 1.2 are off this grid


def test_class_tables_equal_the_stored_arrays_and_the_logits(grid_store: Path) -> None:
    figures = read_store_stats(grid_store)
    store = Store.open(grid_store)
    stored = np.asarray(open_stat(store, figures.teacher, "class_table")[...])
    tau0s = [float(t) for t in store.card(figures.teacher).stats["class_table"]["tau0"]]
    assert sorted(figures.class_tables) == sorted(tau0s) == [0.3, 1.0]
    labels = store.labels()
    c = store.card(figures.teacher).num_classes
    for i, t0 in enumerate(tau0s):
        np.testing.assert_array_equal(figures.class_tables[t0], stored[i])
        sums, rows = np.zeros((c, c)), np.zeros(c)
        for view, chunk in store.iter_chunks():
            start, stop = store.grid.bounds(chunk)
            t = store.read_logits_chunk(figures.teacher, view, chunk).astype(np.float64) / t0
            p = np.exp(t - t.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            y = labels[start:stop]
            np.add.at(sums, y, p)
            np.add.at(rows, y, 1)
        np.testing.assert_allclose(figures.class_tables[t0], sums / rows[:, None], atol=1e-5)


def test_the_store_page_and_pngs_of_a_float32_grid(grid_store: Path, tmp_path: Path) -> None:
    code, text = run_cli("report", "--store", grid_store, "--out", tmp_path / "out")
    assert code == 0, text
    for name in ("teacher_accuracy.png", "tau_star.png", "class_table_tau0-0.3.png", "class_table_tau0-1.png"):
        assert_png(tmp_path / "out" / name)


# --- grouping: only comparable runs are one method ------------------------------------------------------------


def _variant(src: Path, dst: Path, **changes: object) -> Path:
    """A copy of run ``src`` at ``dst`` whose run.json records ``changes`` (dotted: loss_opts.temperature), as a run
    started with them would."""
    shutil.copytree(src, dst)
    record = json.loads((dst / "run.json").read_text())
    for key, value in changes.items():
        if key in ("store_input_hash", "teacher_input_hash"):
            record[key] = value
            continue
        head, _, leaf = key.partition(".")
        for part in ("args", "identity"):
            if head not in record[part]:  # the store's path is an argument, not part of the identity
                continue
            if leaf:
                record[part].setdefault(head, {})[leaf] = value
            else:
                record[part][head] = value
    (dst / "run.json").write_text(json.dumps(record))
    return dst


def test_runs_of_one_name_with_other_options_are_separate_methods(workdir: Path, tmp_path: Path) -> None:
    a = _variant(workdir / "runs" / "kd-s0", tmp_path / "sweepA" / "kd-s0", **{"loss_opts.temperature": 2})
    b = _variant(workdir / "runs" / "kd-s1", tmp_path / "sweepB" / "kd-s1", **{"loss_opts.temperature": 8})
    summaries = summarise(load_runs([a, b]))
    assert [(s.group, s.loss_opts, s.finals) for s in summaries] == [
        ("kd (temperature=2)", {"temperature": 2}, [_final_of(a)]),
        ("kd (temperature=8)", {"temperature": 8}, [_final_of(b)])]
    out = tmp_path / "out"
    code, text = run_cli("report", a, b, "--out", out)
    assert code == 0, text
    page = (out / "report.md").read_text()
    for s in summaries:
        row = next(line for line in page.splitlines() if line.startswith(f"| {s.group} |"))
        assert f"| 1 | {100 * s.mean:.2f} (n=1) |" in row and "±" not in row, row
    assert "Runs named kd differ in temperature, so they are separate methods" in page


@pytest.mark.parametrize("change, label", [
    ({"epochs": 5, "optim.epochs": 5}, "kd (epochs=5, optim.epochs=5)"),
    ({"student": "kdcache:tiny_cnn"}, "kd (student=kdcache:tiny_cnn)"),
    ({"store_input_hash": "sha256:0123456789abcdef"}, "kd (store=01234567)"),
    ({"loss": "dkd"}, "kd (loss=dkd, "),  # and dkd's hyper-parameters, which kd does not have
])
def test_other_settings_split_a_name_and_label_the_difference(workdir: Path, tmp_path: Path, change: dict,
                                                              label: str) -> None:
    other = _variant(workdir / "runs" / "kd-s1", tmp_path / "b" / "kd-s1", **change)
    groups = [s.group for s in summarise(load_runs([workdir / "runs" / "kd-s0", other]))]
    assert len(groups) == len(set(groups)) == 2
    assert groups[1].startswith(label), groups


def test_a_store_at_another_path_is_named_by_its_path(workdir: Path, tmp_path: Path) -> None:
    other = _variant(workdir / "runs" / "kd-s1", tmp_path / "b" / "kd-s1", store="/data/other.zarr",
                     store_input_hash="sha256:0123456789abcdef")
    groups = [s.group for s in summarise(load_runs([workdir / "runs" / "kd-s0", other]))]
    assert groups == ["kd (store=store.zarr)", "kd (store=other.zarr)"]


def test_only_the_seeds_and_the_paths_may_differ_within_a_method(workdir: Path, tmp_path: Path) -> None:
    default_t = losses.spec("kd").defaults["temperature"]
    a = _variant(workdir / "runs" / "kd-s0", tmp_path / "sweepA" / "kd-s0", store="/elsewhere/store.zarr")
    # the loss's default spelled out is the same method as the default left implicit
    b = _variant(workdir / "runs" / "kd-s1", tmp_path / "sweepB" / "kd-s1", **{"loss_opts.temperature": default_t})
    (s,) = summarise(load_runs([a, b]))
    assert s.group == "kd" and s.n == 2 and {r.seeds["init_seed"] for r in s.runs} == {0, 1}


def test_a_copied_run_is_flagged_as_counted_twice(workdir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(workdir / "runs" / "kd-s0", tmp_path / "kd-s7")
    out = tmp_path / "out"
    code, text = run_cli("report", workdir / "runs" / "kd-s0", copy, "--out", out)
    assert code == 0, text
    assert "Runs kd-s0, kd-s7 of kd recorded the same seeds" in (out / "report.md").read_text()


def test_one_run_shows_n_1_and_no_spread(workdir: Path, tmp_path: Path) -> None:
    run = workdir / "runs" / "ce-s0"
    (s,) = summarise(load_runs([run]))
    assert s.std is None and s.n == 1
    code, text = run_cli("report", run, "--out", tmp_path / "out")
    assert code == 0, text
    row = next(line for line in (tmp_path / "out" / "report.md").read_text().splitlines() if line.startswith("| ce |"))
    assert f"| 1 | {100 * _final_of(run):.2f} (n=1) |" in row and "±" not in row, row
    assert_png(tmp_path / "out" / "final.png")


def test_a_reused_out_keeps_no_stale_figure_and_no_user_file_is_removed(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, text = run_cli("report", *runs_of(workdir), "--store", workdir / "store.zarr", "--out", out)
    assert code == 0, text
    assert (out / "class_table_tau0-1.png").is_file()
    mine = ["notes.txt", "class_table_tau0-mine.png", "final.png.bak", "plot.png"]
    for name in mine:
        (out / name).write_text("the user's")
    (out / "class_table_tau0-9.png").mkdir()  # not a file the report wrote: left alone
    code, text = run_cli("report", *runs_of(workdir), "--out", out)
    assert code == 0, text
    assert {p.name for p in out.iterdir()} == {"report.md", "curves.png", "final.png", "class_table_tau0-9.png",
                                               *mine}
    assert all((out / name).read_text() == "the user's" for name in mine)
    page = (out / "report.md").read_text()
    assert set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)) == {"curves.png", "final.png"}


def test_stats_counts_tau_star_under_each_grid_value_even_when_float32_cannot_hold_it(
        grid_store: Path, tmp_path: Path) -> None:
    from kdcache.stats.compute import format_stats

    copy = tmp_path / "grid.zarr"
    shutil.copytree(grid_store, copy)
    result = compute_stats(copy, tau0=[1.0], grid=GRID, progress=False)
    assert list(result.tau_star_histogram) == GRID  # 1.2 and 0.3 once each, never beside their float32 twins
    s = Store.open(copy)
    name = s.require_complete(None)
    stored = np.asarray(open_stat(s, name, "isats_tau")[...]).ravel()
    want = {float(v): int(n) for v, n in zip(*np.unique(stored, return_counts=True))}
    assert sorted(result.tau_star_histogram.values()) == sorted(want.values())
    assert sum(result.tau_star_histogram.values()) == s.num_views * s.num_samples
    line = format_stats(result)
    assert line.count("τ*=1.2:") == 1 and line.count("τ*=0.3:") == 1, line


def test_a_sweep_directory_reports_every_student(tmp_path: Path, workdir: Path) -> None:
    from kdcache.report.runs import expand_sweeps

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for run in runs_of(workdir):
        shutil.copytree(run, sweep / run.name)
    (sweep / "sweep.json").write_text("{}\n")
    (sweep / "leaderboard.md").write_text("# Sweep leaderboard\n")
    assert expand_sweeps([sweep]) == sorted(sweep / r.name for r in runs_of(workdir))
    code, text = run_cli("report", sweep, "--out", tmp_path / "out")
    assert code == 0, text
    assert sorted(r.name for r in load_runs([sweep])) == sorted(r.name for r in runs_of(workdir))

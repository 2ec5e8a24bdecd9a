"""Every benchmark still runs, and the measured tables of the docs come from them.

* Each job of ``benchmarks/run_all.py`` runs its benchmark's ``--smoke`` mode (tiny sizes, the same code
  path, in this process) and must produce its figures, all finite; their values are not checked.
* ``run_all.py``'s writer round-trips: run in smoke mode into copies of the docs it rewrites, it changes
  only what lies between its markers, and rendering again changes nothing.
* ``docs/performance.md`` and ``docs/scaling.md`` have no table outside the generated markers and no
  measured figure typed into their text, and their tables are exactly what ``run_all.py --render-only``
  writes from the committed records in ``benchmarks/results/``.
* The two scripts that produce results pages rather than tables (``results_fashion_mnist.py``,
  ``encodings_students.sh``) run hours; their smoke check is that every command they would run parses.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from typer.main import get_command

from kdcache_cli.main import app

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import benchlib  # noqa: E402
import run_all  # noqa: E402

# Three `kdcache precompute` processes, one of them a 2-rank torchrun job: about 20 s of interpreter
# start-ups on 2 cores, so the default suite checks its commands and its parser (below) and the slow
# suite runs it.
SLOW_JOBS = ("precompute-scaling",)
SMOKE_JOBS = [j for j in run_all.JOBS if j.smoke and j.name not in SLOW_JOBS]
MEASURED_DOCS = ("performance.md", "scaling.md")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run_all.py --smoke`` into copies of the docs (and a fresh results directory)."""
    tmp = tmp_path_factory.mktemp("run_all")
    (tmp / "docs").mkdir()
    for doc in run_all.DOC_FILES:
        shutil.copy(ROOT / "docs" / doc, tmp / "docs" / doc)
    run_all.main(["--smoke", "--docs", str(tmp / "docs"), "--results", str(tmp / "results"),
                  *(f"--skip={j}" for j in SLOW_JOBS)])
    return tmp


def test_every_benchmark_script_is_a_job() -> None:
    scripts = {p.name for p in BENCH.glob("bench_*.py")}
    assert scripts == {j.script for j in run_all.JOBS if j.script}


@pytest.mark.parametrize("job", SMOKE_JOBS, ids=[j.name for j in SMOKE_JOBS])
def test_each_benchmark_smoke_run_gives_finite_figures(smoke: Path, job: run_all.Job) -> None:
    record = json.loads((smoke / "results" / f"{job.name}.json").read_text())
    assert record["smoke"] and record["command"].endswith("--smoke")
    assert record["figures"], f"{job.name} recorded no figures"
    assert benchlib.non_finite(record) == []
    assert record["machine"]["cores"] and record["machine"]["torch"] and record["date"]


@pytest.mark.slow
def test_precompute_scaling_smoke_run(tmp_path: Path) -> None:
    import bench_precompute

    out = tmp_path / "scaling.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(BENCH / "bench_precompute.py"), "--scaling", "--smoke", "--json",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["figures"] and benchlib.non_finite(record) == []
    assert set(bench_precompute.scaling_jobs(Namespace(samples=1, classes=1, teacher="t", batch_size=1, workers=0),
                                             tmp_path)) == {k.split("/", 1)[1] for k in record["figures"]
                                                            if k.startswith("views_per_s/")}


def test_precompute_scaling_commands_parse_and_their_rate_is_read(tmp_path: Path) -> None:
    """What the slow smoke run checks, without its processes: the jobs' command lines are today's CLI, and
    the rate is read from the summary `kdcache precompute` prints."""
    import bench_precompute

    from kdcache.precompute.run import PrecomputeResult, TeacherSummary
    from kdcache_cli.tables import format_summary

    args = Namespace(samples=64, classes=10, teacher="kdcache:tiny_cnn", batch_size=32, workers=0)
    group = get_command(app)
    for name, (argv, threads) in bench_precompute.scaling_jobs(args, tmp_path).items():
        at = argv.index("precompute")
        assert Path(argv[at - 1]).name == "kdcache" and threads >= 1
        group.commands["precompute"].make_context("precompute", argv[at + 1 :])  # type: ignore[attr-defined]
    summary = TeacherSummary(name="t", accuracy_per_view=[0.5], rows_written=2048, rows_skipped=0, seconds=64.0,
                             disk_bytes=1, bytes_per_view=1.0)
    text = format_summary(PrecomputeResult(store=tmp_path / "s.zarr", teachers=[summary]))
    assert bench_precompute.parse_rate(text) == 32.0


def test_bench_encodings_fidelity_smoke_run(tmp_path: Path) -> None:
    """The fidelity tables of docs/encodings.md (the run_all job reads only its read section)."""
    import bench_encodings

    bench_encodings.main(["--smoke", "--json", str(tmp_path / "enc.json")])
    assert {k[0] for k in bench_encodings.RESULTS} == {100, 1000}  # C=10 needs a trained teacher
    assert benchlib.non_finite(json.loads((tmp_path / "enc.json").read_text())) == []


def test_results_pipeline_commands_parse(tmp_path: Path) -> None:
    import results_fashion_mnist

    assert results_fashion_mnist.main(["--smoke", "--workdir", str(tmp_path)]) == 0
    assert "commands parse" in (tmp_path / "results.log").read_text()


def test_encodings_students_script_commands_parse(tmp_path: Path) -> None:
    log = tmp_path / "commands.txt"
    script = f"kdcache() {{ printf '%q ' \"$@\" >> {shlex.quote(str(log))}; echo >> {shlex.quote(str(log))}; }}\n" \
             f"source {shlex.quote(str(BENCH / 'encodings_students.sh'))}\n"
    done = subprocess.run(["bash", "-c", script], env=dict(os.environ, WORKDIR=str(tmp_path / "work")),
                          capture_output=True, text=True)
    assert done.returncode == 0 and "ALLDONE" in done.stdout, done.stderr
    group = get_command(app)
    commands = [shlex.split(line) for line in log.read_text().splitlines()]
    assert len(commands) > 5
    for argv in commands:
        group.commands[argv[0]].make_context(argv[0], argv[1:])  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------- the docs


def outside_blocks(text: str) -> str:
    return run_all.BLOCK.sub("", text)


# A figure someone measured, typed into the prose: a rate, a time in ms, memory, or a decimal ratio.
MEASURED = re.compile(r"\d[\d,.]*\s*(?:rows/s|views/s|samples/s|ms\b|MiB|MB/s|GB/s)|\d\.\d+\s*[×x]\b|[×x]\d\.\d+"
                      r"|\d+\.\d+%")


@pytest.mark.parametrize("doc", MEASURED_DOCS)
def test_every_table_sits_inside_generated_markers(doc: str) -> None:
    text = (ROOT / "docs" / doc).read_text()
    assert run_all.BLOCK.search(text), f"{doc} has no generated table"
    rest = outside_blocks(text)
    assert not [line for line in rest.splitlines() if line.lstrip().startswith("|")], f"{doc}: a table outside markers"
    assert not re.search(r"^<!-- *(generated|end generated)", rest, re.M), f"{doc}: an unpaired generated marker"
    typed = MEASURED.findall(rest)
    assert not typed, f"{doc}: measured figures typed outside the generated tables: {typed}"


def test_committed_tables_are_what_the_records_render(tmp_path: Path) -> None:
    for doc in run_all.DOC_FILES:
        shutil.copy(ROOT / "docs" / doc, tmp_path / doc)
    run_all.main(["--render-only", "--docs", str(tmp_path)])
    for doc in run_all.DOC_FILES:
        assert (tmp_path / doc).read_text() == (ROOT / "docs" / doc).read_text(), (
            f"docs/{doc} differs from what benchmarks/results/ renders: regenerate it with "
            "`python benchmarks/run_all.py --render-only` (never edit between the markers by hand)")


def test_run_all_rewrites_only_between_markers_and_round_trips(smoke: Path) -> None:
    for doc in run_all.DOC_FILES:
        before, after = (ROOT / "docs" / doc).read_text(), (smoke / "docs" / doc).read_text()
        assert outside_blocks(after) == outside_blocks(before)
        assert [m.group(1) for m in run_all.BLOCK.finditer(after)] == [m.group(1) for m in run_all.BLOCK.finditer(before)]
    perf = (smoke / "docs" / "performance.md").read_text()
    for name, body in run_all.BLOCK.findall(perf):
        table = run_all.TABLES[name]
        if table.jobs and any(j in {x.name for x in SMOKE_JOBS} for j in table.jobs):
            # Every measured table names its command, date and machine, and says it is a smoke run.
            assert "A smoke run" in body and "--smoke`" in body and " cores (" in body and "torch " in body, name
            assert "|" in body or "```" in body, name
    # Rendering again from the same records changes nothing.
    snapshot = {doc: (smoke / "docs" / doc).read_text() for doc in run_all.DOC_FILES}
    run_all.main(["--render-only", "--docs", str(smoke / "docs"), "--results", str(smoke / "results")])
    assert {doc: (smoke / "docs" / doc).read_text() for doc in run_all.DOC_FILES} == snapshot


def test_smoke_refuses_to_write_the_repository_docs() -> None:
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--smoke"])
    assert exc.value.code == 2


def test_quickstart_table_parser_reads_what_the_cli_prints(tmp_path: Path) -> None:
    """The parser that links docs/distill.md's generated table to tests/test_quickstart.py (slow)."""
    from kdcache.quickstart import QuickstartResult, Row
    from kdcache_cli.tables import quickstart_table

    rows = [Row("ce", "cached", 0.762, 24.5, 3259.0), Row("kd", "cached", 0.785, 25.4, 3097.0, {"temperature": 2.0}),
            Row("isats", "cached", 0.739, 24.3, 3255.0), Row("kd", "online", 0.783, 29.9, 2564.0, {"temperature": 2.0})]
    text = quickstart_table(QuickstartResult(workdir=tmp_path, teacher_top1=0.886, precompute_seconds=12.9, rows=rows))
    got = run_all.parse_quickstart(text)
    assert got["teacher_top1"] == 88.6
    assert got["val_top1"] == {("ce", "cached"): 76.2, ("kd", "cached"): 78.5, ("isats", "cached"): 73.9,
                               ("kd", "online"): 78.3}
    assert got["vs_ce"][("kd", "online")] == 2.1 and got["seconds"][("isats", "cached")] == 24.3

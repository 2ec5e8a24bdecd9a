"""What every benchmark shares: the ``--smoke`` and ``--json`` options and the figures it records.

A benchmark prints its results for a reader and, with ``--json PATH``, writes
them for ``benchmarks/run_all.py``, which turns them into the tables of
``docs/performance.md`` and ``docs/scaling.md``. A figure is a list of values,
one per repeat, kept with its median, min and max; the record also holds the
command, the date and the machine (cores, CPU, torch and zarr versions, load
average before and after), so a table never loses where its numbers came from.

``--smoke`` runs the same code at tiny sizes in seconds: its figures prove the
benchmark still runs and produces finite numbers (``tests/test_benchmarks.py``),
and mean nothing else.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SMOKE_HELP = "tiny sizes, seconds: the same code path, for the test suite (the figures mean nothing)"
JSON_HELP = "also write the figures, command and machine to this JSON file (benchmarks/run_all.py reads it)"


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help=JSON_HELP)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """Where the figures were measured (recorded with every table)."""
    import numpy
    import torch
    import zarr

    return {"cores": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "zarr": zarr.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def summarise(values: Iterable[float]) -> dict[str, Any]:
    v = [float(x) for x in values]
    if not v:
        raise ValueError("a figure needs at least one value")
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v), "values": v}


class Figures:
    """The figures of one benchmark run, written as JSON with where and how they were measured."""

    def __init__(self, script: str, argv: list[str] | None) -> None:
        argv = list(sys.argv[1:] if argv is None else argv)
        shown = _drop_option(argv, "--json")
        self.data: dict[str, Any] = {
            "benchmark": Path(script).stem,
            "command": shlex.join(["python", f"benchmarks/{Path(script).name}", *shown]),
            "smoke": "--smoke" in shown,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": load_average(),
            "config": {},
            "figures": {},
        }

    def config(self, **kw: Any) -> None:
        self.data["config"].update(kw)

    def add(self, key: str, values: float | Iterable[float], unit: str = "") -> dict[str, Any]:
        """Record figure ``key`` (one value, or one per repeat)."""
        fig = summarise([values] if isinstance(values, (int, float)) else values)
        fig["unit"] = unit
        self.data["figures"][key] = fig
        return fig

    def median(self, key: str) -> float:
        return float(self.data["figures"][key]["median"])

    def write(self, path: Path | None) -> None:
        if path is None:
            return
        self.data["load_after"] = load_average()
        self.data["machine"] = machine()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=1) + "\n")


def _drop_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def non_finite(data: dict[str, Any]) -> list[str]:
    """The figures of a record that are missing or not finite (what the smoke test fails on)."""
    bad = []
    for key, fig in data.get("figures", {}).items():
        if not fig.get("values") or not all(math.isfinite(float(x)) for x in fig["values"]):
            bad.append(key)
    return bad


# The last line a peak-RSS child prints: its own peak resident set, in KiB (Linux ru_maxrss).
RSS_LINE = "print(__import__('json').dumps(__import__('resource').getrusage(__import__('resource').RUSAGE_SELF).ru_maxrss))\n"


def rss_child(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Run ``code`` in a fresh interpreter that prints its peak RSS last (a fresh process: nothing shared)."""
    return subprocess.Popen([sys.executable, "-c", code + RSS_LINE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def peak_rss_mib(child: subprocess.Popen[str], what: str) -> float:
    """The peak RSS, in MiB, that a :func:`rss_child` printed; a failed child stops the benchmark naming ``what``."""
    out, err = child.communicate()
    if child.returncode:
        raise SystemExit(f"the {what} child failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]) / 1024  # KiB -> MiB

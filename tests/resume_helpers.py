"""Killing a CLI run part-way (SIGKILL, as a crash or an OOM kill would) and comparing results bitwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("samples_per_s", "epoch_seconds")


def lines(path: Path) -> int:
    """Complete lines in a log (0 if it does not exist yet)."""
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def run_until_killed(args: list[object], ready: Callable[[], bool], delay: Callable[[], float] | float = 0.0,
                     timeout: float = 180.0) -> bool:
    """Run `kdcache ARGS` in a subprocess and SIGKILL it ``delay`` seconds after ``ready()`` holds.

    ``delay`` may be a function, called once ``ready()`` holds (e.g. a fraction of the last epoch's
    measured time). Returns False if the run finished before it could be killed.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "kdcache_cli.main", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.005)
    wait = delay() if callable(delay) else delay
    if wait > 0 and proc.poll() is None:
        time.sleep(wait)
    finished = proc.poll()
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert finished in (None, 0), f"the run failed (exit {finished}): {err.decode()[-2000:]}"
    return finished is None


def kill_part_way(args: list[object], metrics: Path, after_epochs: int, fraction: float, final: Path,
                  clean: Callable[[], None], tries: int = 5) -> None:
    """SIGKILL a run at a point chosen by its progress, not by the wall clock.

    Waits until ``metrics`` holds ``after_epochs`` rows, then ``fraction`` (in [0, 1)) of the last
    epoch's measured training time, so the kill lands at a random place in the next epoch on a fast
    or a loaded machine alike. Should the machine speed up and the run end (or write ``final``) first,
    ``clean()`` removes its files and the run is repeated with half the fraction (the last try kills at once), so the
    kill always lands before the end.
    """
    for attempt in range(tries):
        f = 0.0 if attempt == tries - 1 else fraction / 2**attempt

        def delay() -> float:
            done = metrics.read_text().split("\n")[:-1]  # complete rows only
            return f * float(json.loads(done[-1])["epoch_seconds"]) if done else 0.0

        if run_until_killed(args, lambda: lines(metrics) >= after_epochs, delay) and not final.exists():
            return
        clean()
    raise AssertionError(f"the run ended before it could be killed, {tries} times")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bitwise equal state dicts (same names, dtypes, shapes and bits)."""
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ: {differ[:5]}"

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


def run_until_killed(args: list[object], ready: Callable[[], bool], delay: float = 0.0,
                     timeout: float = 180.0) -> None:
    """Run `kdcache ARGS` in a subprocess and SIGKILL it ``delay`` seconds after ``ready()`` holds.

    Fails the test if the run finished before it could be killed.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "kdcache_cli.main", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.005)
    if delay:
        time.sleep(delay)
    finished = proc.poll()
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert finished is None, f"the run ended (exit {finished}) before it was killed: {err.decode()[-2000:]}"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bitwise equal state dicts (same names, dtypes, shapes and bits)."""
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ: {differ[:5]}"

"""Running kdcache under torchrun in tests: N CPU processes on gloo, killed by progress, compared bitwise."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torchrun_cmd(nproc: int, *args: object) -> list[str]:
    """``torchrun --standalone --nproc-per-node N --no-python kdcache ARGS`` (a free port per job)."""
    launcher = shutil.which("torchrun")
    head = [launcher] if launcher else [sys.executable, "-m", "torch.distributed.run"]
    kdcache = shutil.which("kdcache") or "kdcache"
    return [*head, "--standalone", "--nproc-per-node", str(nproc), "--no-python", kdcache, *map(str, args)]


def env() -> dict[str, str]:
    # One intra-op thread per rank: 2 ranks on a 2-core machine (and import:tests.helpers models resolve).
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, *args: object, timeout: float = 300.0) -> tuple[int, str]:
    """Run a kdcache command as ``nproc`` ranks; return the exit code and stdout+stderr."""
    proc = subprocess.run(torchrun_cmd(nproc, *args), env=env(), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def torchrun_until_killed(nproc: int, args: list[object], ready: Callable[[], bool], timeout: float = 300.0) -> bool:
    """Start a torchrun job and SIGKILL all its processes (launcher and ranks) once ``ready()`` holds.

    Returns False if the job finished before ``ready()`` held.
    """
    proc = subprocess.Popen(torchrun_cmd(nproc, *args), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    finished = proc.poll()
    # torchrun starts each rank in a session of its own: kill every descendant, then the launcher.
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, err = proc.communicate()
    assert finished in (None, 0), f"the job failed (exit {finished}): {err.decode()[-3000:]}"
    return finished is None


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children first found first), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def store_files(path: Path) -> dict[str, bytes]:
    """Every file of a local store but its manifest (timestamps) and lock file (a pid): the stored bits."""
    out = {}
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_file() and rel not in ("zarr.json", ".kdcache-writer.lock"):
            out[rel] = f.read_bytes()
    return out


def assert_same_store(a: Path, b: Path) -> None:
    """Two stores hold the same arrays, bit for bit, and the same manifest up to times and platform."""
    fa, fb = store_files(a), store_files(b)
    assert fa.keys() == fb.keys(), sorted(set(fa) ^ set(fb))
    differ = [k for k in fa if fa[k] != fb[k]]
    assert not differ, f"{len(differ)} files differ: {differ[:5]}"

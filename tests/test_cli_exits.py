"""How a command ends, as a user sees it: exit codes 0 / 1 / 2 / 130, and every error a user can
cause (a bad option, a store mismatch, Ctrl-C, a read-only or locked-down output, an output that is a
file, a replay from another directory) is one line, never a traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdcache_cli.exits import describe_os_error
from tests.cli_helpers import assert_one_line_error, distill_args, precompute_args, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
PRECOMPUTE = {"data": DATA, "seed": 3}
DISTILL = {"data": DATA, "val_data": VAL}


def teacher_args(out: Path, *extra: object) -> list[object]:
    return ["train-teacher", "--data", DATA, "--val-data", VAL, "--model", TINY, "--epochs", "1", "--batch-size",
            "32", "--recipe", RECIPE, "--out", out, *extra]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exits") / "store.zarr"
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert code == 0, text
    return out


# --- exit codes ----------------------------------------------------------------------------------


def test_ok_is_0(store: Path) -> None:
    code, text = run_cli("info", store)
    assert code == 0, text


@pytest.mark.parametrize("args", [
    ["distill", "--data", DATA],  # required options missing
    ["precompute", "--views", "many"],  # not a number
    ["stats", "s.zarr", "--grid", "1", "--grid", "warm"],  # checked by the CLI itself
    ["nosuchcommand"],
])
def test_usage_errors_are_2_in_one_line(args: list[str]) -> None:
    assert_one_line_error(*run_cli(*args), exit_code=2)


def test_a_value_the_library_refuses_is_a_usage_error(tmp_path: Path) -> None:
    # UsageError raised by the library (not by Click) also exits 2, and nothing is written.
    code, text = run_cli(*teacher_args(tmp_path / "t.pt", "--label-smoothing", "0.1", "--regt", "0.1"))
    assert_one_line_error(code, text, "--regt", exit_code=2)
    assert not (tmp_path / "t.pt").exists()


def test_a_store_mismatch_is_1(store: Path) -> None:
    code, text = run_cli(*[a if a != "3" else "4" for a in precompute_args(store, **PRECOMPUTE)])  # another --seed
    assert_one_line_error(code, text, "seed")


def test_a_missing_store_is_1(tmp_path: Path) -> None:
    assert_one_line_error(*run_cli("info", tmp_path / "nowhere.zarr"), "kdcache precompute")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _interrupt(cmd: list[object], started: Path) -> subprocess.CompletedProcess[str]:
    """Start `kdcache CMD` in a subprocess, wait until ``started`` exists, then press Ctrl-C (SIGINT)."""
    proc = subprocess.Popen([sys.executable, "-m", "kdcache_cli.main", *map(str, cmd)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not started.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_is_130_with_how_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "slow.zarr"
    # 4,096 samples x 2 views at 50 ms per 64-row batch: about 6 s, so Ctrl-C lands mid-run.
    args = [a.replace("samples=128", "samples=4096") if isinstance(a, str) else a
            for a in precompute_args(out, teacher="import:tests.helpers:slow", **PRECOMPUTE)]
    done = _interrupt(args, out / "teachers" / "slow" / "checksums" / "c")  # the first chunk is recorded
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "interrupted" in line and "run the same command again" in line
    # What it says holds: the same command finishes the store.
    code, text = run_cli(*args)
    assert code == 0, text
    assert run_cli("verify", out)[0] == 0


def test_ctrl_c_in_distill_says_resume(tmp_path: Path, store: Path) -> None:
    run = tmp_path / "run"
    done = _interrupt(distill_args(run, "--student", "import:tests.helpers:slow", "--epochs", "50", store=store,
                                   **DISTILL),
                      run / "run.json")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "--resume" in done.stderr


# --- bad outputs (issue: tracebacks instead of one line) ------------------------------------------


@contextlib.contextmanager
def read_only_dir(base: Path) -> Iterator[Path]:
    """A directory on a read-only tmpfs (needs root, as CI has), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    path = base / "ro"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _outputs(store: Path, parent: Path) -> dict[str, list[object]]:
    return {
        "precompute": precompute_args(parent / "store.zarr", **PRECOMPUTE),
        "distill": distill_args(parent / "run", store=store, **DISTILL),
        "train-teacher": teacher_args(parent / "teacher.pt"),
    }


@pytest.mark.parametrize("command", ["precompute", "distill", "train-teacher"])
def test_out_under_a_read_only_parent_is_one_line(tmp_path: Path, store: Path, command: str) -> None:
    with read_only_dir(tmp_path) as ro:
        code, text = run_cli(*_outputs(store, ro)[command])
    assert_one_line_error(code, text, str(ro), "read-only")


@pytest.mark.parametrize("command", ["precompute", "distill", "train-teacher"])
def test_out_under_missing_parents_creates_them(tmp_path: Path, store: Path, command: str) -> None:
    parent = tmp_path / "not" / "yet"
    code, text = run_cli(*_outputs(store, parent)[command])
    assert code == 0, text
    assert any(parent.iterdir())


@pytest.mark.parametrize("command", ["precompute", "distill", "train-teacher"])
def test_out_under_a_file_is_one_line(tmp_path: Path, store: Path, command: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_one_line_error(*run_cli(*_outputs(store, blocker)[command]), str(blocker))
    assert blocker.read_text() == "x"


def test_distill_out_naming_a_file_is_one_line(tmp_path: Path, store: Path) -> None:
    target = tmp_path / "run"
    target.write_text("my notes")
    assert_one_line_error(*run_cli(*distill_args(target, store=store, **DISTILL)), str(target))
    assert target.read_text() == "my notes"  # nothing already written is lost


@pytest.mark.parametrize("command", ["precompute", "distill", "train-teacher"])
def test_negative_workers_is_a_usage_error(tmp_path: Path, store: Path, command: str) -> None:
    args = _outputs(store, tmp_path)[command]
    assert_one_line_error(*run_cli(*args, "--workers", "-1"), "--workers", exit_code=2)


@contextlib.contextmanager
def as_nobody() -> Iterator[None]:
    """Run the next in-process CLI call without root's override of file permissions."""
    if os.geteuid() != 0:
        yield  # a normal user is refused by the permissions already
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.parametrize("command", ["precompute", "distill", "train-teacher"])
def test_permission_denied_is_one_line(command: str) -> None:
    # pytest's tmp_path is private to root: the store and a locked directory live where others can reach.
    base = Path(tempfile.mkdtemp(prefix="kdcache-perm-"))
    try:
        base.chmod(0o755)
        store = base / "store.zarr"
        assert run_cli(*precompute_args(store, **PRECOMPUTE))[0] == 0
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        assert run_cli(*_outputs(store, base / "warm")[command])[0] == 0  # imports done before dropping root
        with as_nobody():
            code, text = run_cli(*_outputs(store, locked)[command])
        assert_one_line_error(code, text, str(locked), "permission denied")
    finally:
        shutil.rmtree(base)


def test_verify_replay_from_another_directory_with_relative_weights(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    code, text = run_cli(*teacher_args(Path("teacher.pt")))
    assert code == 0, text
    code, text = run_cli(*precompute_args(Path("store.zarr"), "--weights", "teacher.pt", **PRECOMPUTE))
    assert code == 0, text
    monkeypatch.chdir(elsewhere)
    code, text = run_cli("verify", work / "store.zarr", "--replay", "4")
    assert code == 0, text
    assert "Traceback" not in text


@pytest.mark.parametrize(("err", "needle"), [
    (errno.ENOSPC, "no space left"),
    (errno.EACCES, "permission denied"),
    (errno.EROFS, "read-only"),
    (errno.ENOENT, "does not exist"),
    (errno.EISDIR, "is a directory"),
    (errno.ENOTDIR, "is a file"),
])
def test_each_os_condition_names_the_path_and_what_to_do(err: int, needle: str) -> None:
    line = describe_os_error(OSError(err, os.strerror(err), "/data/out.zarr"))
    assert needle in line and "/data/out.zarr" in line and "\n" not in line

"""The store and `kdcache precompute`, `info`, `verify`, driven as a user drives them (the CLI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.cli_helpers import assert_one_line_error, precompute_args, run_cli
from kdcache.store import LOCK_NAME, Store, WriterLock

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=300,classes=5,size=12,channels=1,seed=3"
TEACHER = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
PRECOMPUTE = {"data": DATA, "teacher": TEACHER, "recipe": RECIPE}




@pytest.fixture(scope="module")
def store_f32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("s") / "store.zarr"
    code, text = run_cli(*precompute_args(out, "--encoding", "float32", "--batch-size", "64", **PRECOMPUTE))
    assert code == 0, text
    return out


def test_store_opens_with_plain_zarr(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert code == 0, text
    assert "accuracy per view" in text
    # Read without kdcache: only zarr and json.
    g = zarr.open_group(out, mode="r")
    manifest = g.attrs["kdcache"]
    assert manifest["status"] == "complete" and manifest["format_version"] == 2
    logits = g["teachers/tiny/logits"]
    assert logits.shape == (2, 300, 5) and logits.dtype == np.float16
    assert g["labels"].shape == (300,)
    assert g["views/params"].shape[:2] == (2, 300)
    assert np.isfinite(logits[:]).all()
    assert manifest["teachers"]["tiny"]["status"] == "complete"
    assert manifest["dataset"]["fingerprint"].startswith("sha256:")


def test_batch_size_and_workers_do_not_change_the_store(tmp_path: Path, store_f32: Path) -> None:
    out = tmp_path / "b.zarr"
    code, text = run_cli(*precompute_args(out, "--encoding", "float32", "--batch-size", "1", "--workers", "2",
                                          **PRECOMPUTE))
    assert code == 0, text
    a, b = zarr.open_group(store_f32, mode="r"), zarr.open_group(out, mode="r")
    assert np.array_equal(a["teachers/tiny/logits"][:], b["teachers/tiny/logits"][:])
    assert np.array_equal(a["views/params"][:], b["views/params"][:])


def test_rerun_of_complete_store_is_a_no_op_and_other_args_are_refused(tmp_path: Path, store_f32: Path) -> None:
    before = zarr.open_group(store_f32, mode="r")["teachers/tiny/logits"][:]
    code, text = run_cli(*precompute_args(store_f32, "--encoding", "float32", **PRECOMPUTE))
    assert code == 0, text
    assert np.array_equal(before, zarr.open_group(store_f32, mode="r")["teachers/tiny/logits"][:])
    code, text = run_cli(*[a if a != "7" else "8" for a in precompute_args(store_f32, "--encoding", "float32",
                                                                           **PRECOMPUTE)])
    assert code == 1 and "seed" in text and "Traceback" not in text
    code, text = run_cli(*precompute_args(store_f32, "--encoding", "float16", **PRECOMPUTE))
    assert code == 1 and "encoding" in text


def test_add_second_teacher_on_same_views(tmp_path: Path) -> None:
    out = tmp_path / "two.zarr"
    assert run_cli(*precompute_args(out, **PRECOMPUTE))[0] == 0
    code, text = run_cli(*precompute_args(out, "--teacher-name", "second", **PRECOMPUTE))
    assert code == 0, text
    store = Store.open(out)
    assert store.teacher_names() == ["tiny", "second"] and store.status == "complete"
    assert np.array_equal(store.logits("tiny")[:], store.logits("second")[:])


def test_info_and_verify(store_f32: Path) -> None:
    code, text = run_cli("info", str(store_f32))
    assert code == 0 and "tiny" in text and "fingerprint" in text
    code, text = run_cli("info", str(store_f32), "--json")
    info = json.loads(text)
    assert info["teachers"]["tiny"]["logits"]["shape"] == [2, 300, 5]
    code, text = run_cli("verify", str(store_f32), "--replay", "6")
    assert code == 0, text
    assert "argmax agreement 100.00%" in text and "max |logit difference| 0" in text


def test_verify_names_a_corrupted_chunk(tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    assert run_cli(*precompute_args(out, **PRECOMPUTE))[0] == 0
    chunk = out / "teachers" / "tiny" / "logits" / "c" / "1" / "2" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[10] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    code, text = run_cli("verify", str(out))
    assert code == 1
    assert "view 1 chunk 2" in text and "checksum mismatch" in text


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_sigkill_then_resume_is_identical(tmp_path: Path) -> None:
    data = "synthetic:samples=1024,classes=5,size=12,channels=1,seed=3"
    ref = tmp_path / "ref.zarr"
    assert run_cli(*precompute_args(ref, "--encoding", "float32", **{**PRECOMPUTE, "data": data}))[0] == 0
    out = tmp_path / "killed.zarr"
    slow = {**PRECOMPUTE, "data": data, "teacher": "import:tests.helpers:slow"}
    args = precompute_args(out, "--encoding", "float32", "--batch-size", "64", **slow)
    cmd = [sys.executable, "-m", "kdcache_cli.main", *args]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sums = out / "teachers" / "slow" / "checksums" / "c"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few chunks are recorded, then kill -9
        if sums.exists() and sum(len(f) for _, _, f in os.walk(sums)) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store.open(out)
    assert store.status == "writing"
    assert 0 < int((np.asarray(store.logit_checksums("slow")[:]) > 0).sum()) < 32
    code, text = run_cli("verify", str(out))
    assert code == 1 and "never written" in text
    code, text = run_cli(*args)
    assert code == 0, text
    assert "already stored" in text
    a, b = Store.open(ref), Store.open(out)
    assert np.array_equal(a.logits("tiny")[:], b.logits("slow")[:])
    assert np.array_equal(a.params()[:], b.params()[:])
    assert run_cli("verify", str(out))[0] == 0


# ------------------------------------------------------------------ bad input


def test_missing_dataset_root(tmp_path: Path) -> None:
    code, text = run_cli(*precompute_args(tmp_path / "x.zarr", **{**PRECOMPUTE,
                                                                  "data": f"fashion-mnist:{tmp_path}/nowhere"}))
    assert_one_line_error(code, text, "nowhere")


def test_teacher_with_wrong_output_width(tmp_path: Path) -> None:
    code, text = run_cli(*precompute_args(tmp_path / "x.zarr", **{**PRECOMPUTE,
                                                                  "teacher": "import:tests.helpers:wrong_width"}))
    assert_one_line_error(code, text, "6", "5")


def test_nan_logits_name_sample_and_view_and_keep_written_chunks(tmp_path: Path) -> None:
    out = tmp_path / "nan.zarr"
    code, text = run_cli(*precompute_args(out, **{**PRECOMPUTE, "teacher": "import:tests.helpers:nan_model"}))
    assert_one_line_error(code, text, "sample", "view", "NaN")
    assert Store.open(out).status == "writing"


def test_out_is_a_file_or_foreign_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert_one_line_error(*run_cli(*precompute_args(f, **PRECOMPUTE)), "file")
    d = tmp_path / "dir"
    d.mkdir()
    (d / "keep.txt").write_text("precious")
    assert_one_line_error(*run_cli(*precompute_args(d, **PRECOMPUTE)), "not a kdcache store")
    assert (d / "keep.txt").read_text() == "precious"


def test_unknown_format_version(tmp_path: Path) -> None:
    out = tmp_path / "v.zarr"
    assert run_cli(*precompute_args(out, **PRECOMPUTE))[0] == 0
    g = zarr.open_group(out, mode="r+")
    m = dict(g.attrs["kdcache"])
    m["format_version"] = 99
    g.attrs["kdcache"] = m
    assert_one_line_error(*run_cli("info", str(out)), "version 99")
    assert_one_line_error(*run_cli(*precompute_args(out, **PRECOMPUTE)), "version 99")


def test_checkpoint_that_does_not_fit(tmp_path: Path) -> None:
    import torch

    ckpt = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, ckpt)
    code, text = run_cli(*precompute_args(tmp_path / "x.zarr", "--weights", str(ckpt), **PRECOMPUTE))
    assert_one_line_error(code, text)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "busy.zarr"
    assert run_cli(*precompute_args(out, **PRECOMPUTE))[0] == 0
    lock = WriterLock(out)
    lock.acquire()
    try:
        # flock is per open file description: a second process is refused.
        proc = subprocess.run(
            [sys.executable, "-m", "kdcache_cli.main", *precompute_args(out, "--teacher-name", "other", **PRECOMPUTE)],
            env=_env(), capture_output=True, text=True, timeout=120,
        )
    finally:
        lock.release()
    assert proc.returncode == 1, proc.stderr
    assert "another process" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / LOCK_NAME).exists()
    assert Store.open(out).teacher_names() == ["tiny"]


def test_two_teachers_in_one_command(tmp_path: Path) -> None:
    out = tmp_path / "pair.zarr"
    code, text = run_cli(*precompute_args(out, "--teacher", "import:tests.helpers:wrong_width", "--teacher-name", "a",
                                          "--teacher-name", "b", **PRECOMPUTE))
    # The second teacher has the wrong width: refused before anything is written.
    assert code == 1 and "Traceback" not in text and "6" in text
    assert not (out / "zarr.json").exists()
    code, text = run_cli(*precompute_args(tmp_path / "ok.zarr", "--teacher", "import:tests.helpers:slow",
                                          "--teacher-name", "a", "--teacher-name", "b", **PRECOMPUTE))
    assert code == 0, text
    store = Store.open(tmp_path / "ok.zarr")
    assert store.teacher_names() == ["a", "b"] and store.status == "complete"
    assert np.array_equal(store.logits("a")[:], store.logits("b")[:])  # same weights, same views

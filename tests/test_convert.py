"""``kdcache convert``: a float32 teacher re-encoded equals ``precompute --encoding`` array for array,
resumes, refuses what it cannot do in one line, and its statistics come from the float teacher."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdcache.store import Store, WriterLock
from tests.cli_helpers import assert_one_line_error, precompute_args, run_cli

ENCODINGS = {"ci8": "int8", "ctk": "topk:4", "csm": "sample:16@2"}
DATA = "synthetic:samples=192,classes=10,size=12,channels=1,seed=5"  # as tests/test_encodings.py
PRECOMPUTE = {"data": DATA, "seed": 3}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A float32 store converted into every compact encoding, and a store precomputed directly in each."""
    base = tmp_path_factory.mktemp("convert")
    converted, direct = base / "converted.zarr", base / "direct.zarr"
    code, text = run_cli(*precompute_args(converted, teacher_name="f32", encoding="float32", **PRECOMPUTE))
    assert code == 0, text
    for name, encoding in ENCODINGS.items():
        code, text = run_cli("convert", converted, "--teacher-name", "f32", "--encoding", encoding, "--as", name)
        assert code == 0 and f"teacher {name} ({encoding})" in text, text
        code, text = run_cli(*precompute_args(direct, teacher_name=name, encoding=encoding,
                                              **PRECOMPUTE))  # same seed, views, chunk rows, name
        assert code == 0, text
    return converted, direct


def _arrays(store: Path, name: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(store, mode="r")
    return {key: arr[:] for key, arr in g[f"teachers/{name}"].arrays()}


def test_convert_equals_precompute_with_the_encoding_array_for_array(stores: tuple[Path, Path]) -> None:
    converted, direct = stores
    for name in ENCODINGS:
        a, b = _arrays(converted, name), _arrays(direct, name)
        assert set(a) == set(b) and "checksums" in a, (name, sorted(a))
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), (name, key)
        ca, cb = Store.open(converted).card(name), Store.open(direct).card(name)
        assert ca.identity() == cb.identity() and ca.status == "complete"
        assert ca.extra_dict()["converted_from"] == "f32"
        assert ca.accuracy_per_view == cb.accuracy_per_view


def test_convert_resumes_only_what_is_missing(stores: tuple[Path, Path], tmp_path: Path) -> None:
    converted, _ = stores
    copy = tmp_path / "c.zarr"
    shutil.copytree(converted, copy)
    sums = zarr.open_array(copy / "teachers" / "ctk" / "checksums", mode="r+")
    sums[0, 1] = 0  # as if killed before chunk 1's record
    lse = zarr.open_array(copy / "teachers" / "ctk" / "lse", mode="r+")
    lse[1, 0] = 123.0  # and a torn chunk whose record no longer matches
    code, text = run_cli("convert", copy, "--teacher-name", "f32", "--encoding", "topk:4", "--as", "ctk")
    assert code == 0 and "resuming" in text and "1 chunk(s)" in text, text
    assert "128 rows encoded" in text, text  # two chunks of 64 rows, nothing else
    a, b = _arrays(converted, "ctk"), _arrays(copy, "ctk")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    code, text = run_cli("verify", copy)
    assert code == 0, text


def test_convert_refuses_in_one_line(stores: tuple[Path, Path], tmp_path: Path) -> None:
    converted, _ = stores
    assert_one_line_error(*run_cli("convert", converted, "--teacher-name", "ctk", "--encoding", "int8", "--as", "x"),
                          "stored as topk:4", exit_code=2)
    assert_one_line_error(*run_cli("convert", converted, "--teacher-name", "f32", "--encoding", "int8", "--as", "ctk"),
                          "already has a teacher 'ctk'")
    assert_one_line_error(*run_cli("convert", converted, "--teacher-name", "f32", "--encoding", "topk:x"),
                          "--encoding", exit_code=2)
    assert_one_line_error(*run_cli("convert", converted, "--teacher-name", "nope", "--encoding", "int8"), "nope",
                          exit_code=2)  # a usage error, as a compact source teacher is
    assert_one_line_error(*run_cli("convert", tmp_path / "none.zarr", "--encoding", "int8"), "no store")
    assert "x" not in Store.open(converted).teacher_names()


def test_convert_refusals_come_before_the_writer_lock(stores: tuple[Path, Path]) -> None:
    """While another process writes the store, a convert it would refuse anyway says why, not "busy"."""
    converted, _ = stores
    with WriterLock(converted):
        for args, needle in ((["--teacher-name", "nope", "--encoding", "int8"], "no teacher 'nope'"),
                             (["--teacher-name", "ctk", "--encoding", "int8"], "stored as topk:4"),
                             (["--teacher-name", "f32", "--encoding", "int8", "--as", "x y"], "must use letters")):
            assert_one_line_error(*run_cli("convert", converted, *args), needle, exit_code=2)
        assert_one_line_error(*run_cli("convert", converted, "--teacher-name", "f32", "--encoding", "int8",
                                       "--as", "ctk"), "already has a teacher 'ctk' made differently",
                              "encoding")
        assert_one_line_error(*run_cli("convert", converted, "--teacher-name", "f32", "--encoding", "int8"),
                              "being written by another process")  # a convert that would write waits its turn


def test_stats_of_a_converted_teacher_come_from_its_float_teacher(stores: tuple[Path, Path], tmp_path: Path) -> None:
    converted, direct = stores
    copy = tmp_path / "s.zarr"
    shutil.copytree(converted, copy)
    for store, name in ((copy, "csm"), (copy, "f32"), (direct, "csm")):
        code, text = run_cli("stats", store, "--teacher-name", name)
        assert code == 0, text
    s = Store.open(copy)
    assert s.card("csm").stats["isats_tau"]["source"].startswith("f32 (float32)")
    tau_conv = zarr.open_group(copy, mode="r")["teachers/csm/stats/isats_tau"][:]
    tau_f32 = zarr.open_group(copy, mode="r")["teachers/f32/stats/isats_tau"][:]
    assert np.array_equal(tau_conv, tau_f32)  # the same logits, before the sample lost anything
    assert "pseudo-logits" in Store.open(direct).card("csm").stats["isats_tau"]["source"]
    code, text = run_cli("info", copy)
    assert "the teacher csm was converted from" in text, text

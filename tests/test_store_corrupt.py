"""A chunk or array metadata that cannot be decoded stops distill, stats and info with one line naming it."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from kdcache.store import Store
from kdcache.store.stat_io import StatWriter
from tests.cli_helpers import assert_one_line_error, distill_args, precompute_args, run_cli

DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"  # as tests/test_cli_exits.py
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
PRECOMPUTE = {"data": DATA, "seed": 3}
DISTILL = {"data": DATA, "val_data": VAL}


def _store(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "s.zarr"
    code, text = run_cli(*precompute_args(out, *extra, **PRECOMPUTE))
    assert code == 0, text
    return out


def _cut(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def test_distill_on_a_zstd_chunk_cut_short(tmp_path: Path) -> None:
    out = _store(tmp_path, "--codec", "zstd")
    _cut(out / "teachers" / "tiny" / "logits" / "c" / "0" / "0" / "0")
    code, text = run_cli(*distill_args(tmp_path / "run", store=out, **DISTILL))
    assert_one_line_error(code, text, "teachers/tiny/logits view 0 chunk 0", "cannot be decoded")


def test_stats_on_an_uncompressed_chunk_cut_short(tmp_path: Path) -> None:
    out = _store(tmp_path)
    _cut(out / "teachers" / "tiny" / "logits" / "c" / "1" / "0" / "0")
    code, text = run_cli("stats", out)
    assert_one_line_error(code, text, "teachers/tiny/logits view 1 chunk 0", "cannot be decoded")


def test_info_on_a_damaged_array_metadata(tmp_path: Path) -> None:
    out = _store(tmp_path)
    _cut(out / "teachers" / "tiny" / "logits" / "zarr.json")
    code, text = run_cli("info", out)
    assert_one_line_error(code, text, "metadata of teachers/tiny/logits cannot be read")


def test_stat_row_write_that_fails_names_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.open(_store(tmp_path), mode="r+")
    writer = StatWriter(store, "tiny")
    writer.per_row("x", "float32", {})
    arr, _ = writer._arrays["x"]

    class Full:
        dtype = arr.dtype

        def __setitem__(self, key: object, value: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    writer._arrays["x"] = (Full(), writer._arrays["x"][1])  # type: ignore[assignment]
    with pytest.raises(OSError) as info:
        writer.write_rows("x", 1, 0, np.zeros(store.grid.bounds(0)[1], dtype=np.float32))
    assert info.value.filename is not None
    assert info.value.filename.endswith("teachers/tiny/stats/x/c/1/0")  # x's first generation: its plain name

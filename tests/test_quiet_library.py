"""A quiet library: library code reports through logging and warnings, never by printing; the CLI
renders what it returns (the quickstart's table)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import kdcache.models
import kdcache.quickstart as qs
from kdcache_cli.tables import quickstart_table
from tests.cli_helpers import run_cli


def _stub_pipeline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The quickstart's steps as stubs (its own code runs; the training does not)."""
    def distill(cfg: Any, progress: bool = True) -> Any:
        acc = {"ce": 0.70, "kd": 0.75, "nkd": 0.80, "isats": 0.72}[cfg.loss] + (0.01 if cfg.teacher else 0.0)
        return SimpleNamespace(final={"val_top1": acc}, seconds=2.0 if cfg.teacher else 1.0,
                               metrics=[{"samples_per_s": 1000.0}])

    monkeypatch.setattr(qs, "train_teacher", lambda cfg, progress=True: Path(cfg.out).write_bytes(b"t"))
    monkeypatch.setattr(kdcache.models, "load_checkpoint", lambda path: {"card": {"trained": {"val_top1": 0.9}}})
    monkeypatch.setattr(qs, "precompute", lambda **kw: None)
    monkeypatch.setattr(qs, "compute_stats", lambda *a, **kw: None)
    monkeypatch.setattr(qs, "distill", distill)
    monkeypatch.setattr(qs, "write_report", lambda runs, out, **kw: SimpleNamespace(
        page=out / "report.md", figures={"final": out / "final.png"}))


def test_quickstart_logs_its_steps_and_prints_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _stub_pipeline(monkeypatch, tmp_path)
    with caplog.at_level(logging.INFO, logger="kdcache"):
        result = qs.run_quickstart(tmp_path / "qs", student_epochs=1, progress=False)
    assert capsys.readouterr() == ("", "")
    steps = [r.getMessage() for r in caplog.records if r.name == "kdcache.quickstart"]
    assert [s[:3] for s in steps] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert "[bold]" not in "".join(steps)
    # The data the CLI's table needs travels in the result.
    assert result.row("kd", "online").options == qs.METHODS["kd"]
    assert result.teacher == qs.TEACHER and result.store == tmp_path / "qs" / "store.zarr"
    assert not hasattr(qs, "format_table")  # rendering is the CLI's


def test_quickstart_table_is_rendered_by_the_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _stub_pipeline(monkeypatch, tmp_path)
    code, text = run_cli("quickstart", "--out", tmp_path / "qs", "--epochs", 1)
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("1/5 training the teacher kdcache:cnn_small")  # the library's log, as a line
    assert f"teacher {qs.TEACHER}: val top-1 90.00%" in text
    (kd_online,) = [line for line in lines if line.startswith("kd       online")]
    assert "76.00%" in kd_online and "temperature=2, ce_weight=0.5, kd_weight=0.5" in kd_online
    assert "speed-up of cached over online KD: 2.00x" in text
    table = quickstart_table(qs.run_quickstart(tmp_path / "qs", student_epochs=1, progress=False))
    assert table in text


def test_quickstart_refusal_names_no_cli_flag(tmp_path: Path) -> None:
    (tmp_path / "qs" / "runs" / "ce").mkdir(parents=True)
    with pytest.raises(qs.KdcacheError) as err:
        qs._fresh_run_dir(tmp_path / "qs" / "runs" / "ce")
    assert "--" not in str(err.value) and "not a kdcache run" in str(err.value)


# --- the Python API warns instead of printing ------------------------------------------------------

DATA = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5"
RECIPE = str(Path(__file__).resolve().parents[1] / "tests" / "data" / "recipe-small.json")


@pytest.fixture(scope="module")
def encoded_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quiet-enc") / "store.zarr"
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "1",
                         "--recipe", RECIPE, "--encoding", "float32", "--out", out)
    assert code == 0, text
    for enc, name in (("topk:2", "top2"), ("sample:8@2", "s8")):
        code, text = run_cli("convert", out, "--teacher-name", "tiny", "--encoding", enc, "--as", name)
        assert code == 0, text
    return out


def test_api_approximate_rows_warn_with_a_kdcache_warning(encoded_store: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import kdcache
    from kdcache.errors import ApproximateEncodingWarning

    capsys.readouterr()
    store = kdcache.open_store(encoded_store, DATA, teacher_name="top2")
    with pytest.warns(ApproximateEncodingWarning, match="decoded at T=1 .allow_approximate_encoding=True") as got:
        store.batches(1, batch_size=16, allow_approximate_encoding=True)
    assert got[0].filename == __file__  # pointed at the caller's line, not kdcache's
    sampled = kdcache.open_store(encoded_store, DATA, teacher_name="s8")
    with pytest.warns(ApproximateEncodingWarning, match="biased") as got:
        sampled.batches(1, batch_size=16, loss="nkd", allow_approximate_encoding=True)
    assert not str(got[0].message).startswith("warning:")  # the CLI adds the prefix, once
    assert capsys.readouterr() == ("", "")


def test_store_create_names_no_cli_flag(tmp_path: Path) -> None:
    import numpy as np

    from kdcache.errors import StoreError
    from kdcache.store import Store

    (tmp_path / "f").write_text("mine")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("mine")
    for path, fact in ((tmp_path / "f", "is a file"), (tmp_path / "d", "is a non-empty directory")):
        with pytest.raises(StoreError, match=fact) as err:
            # The path is refused before the records are looked at.
            Store.create(path, dataset=None, labels=np.zeros(2, dtype=np.int64), views=None)  # type: ignore[arg-type]
        assert "--out" not in str(err.value)  # a Python caller gave a path, not a flag


def test_a_store_of_other_data_is_refused_without_naming_a_flag(encoded_store: Path) -> None:
    import kdcache
    from kdcache.errors import StoreMismatchError

    other = "synthetic:samples=64,classes=4,size=12,channels=1,seed=6"  # same shape, other images
    with pytest.raises(StoreMismatchError, match="but the data synthetic:.*other images") as err:
        kdcache.open_store(encoded_store, other, teacher_name="tiny")
    assert "--data" not in str(err.value)

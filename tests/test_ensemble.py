"""``kdcache ensemble`` (docs/ensembles.md): each rule against an independent numpy reference read with plain
zarr, the ``derived`` record and what reads it (verify, verify --replay, info, stats, distill), resume after a
kill to the same bits, and the refusals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdcache.store import Store
from kdcache.store.derivation import derivation
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.helpers import TinyNet, _seeded

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=192,classes=10,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=10,size=12,channels=1,seed=5,split=test"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
MEMBERS = ("a", "b", "c")


def member(seed: int):  # noqa: ANN201 - a model factory for import: specs
    return lambda num_classes=10, in_channels=1: _seeded(lambda: TinyNet(num_classes, in_channels), seed)


member_a, member_b, member_c = member(1), member(2), member(3)


def precompute(out: Path, name: str, encoding: str = "float32") -> None:
    code, text = run_cli("precompute", "--data", DATA, "--teacher", f"import:tests.test_ensemble:member_{name}",
                         "--teacher-name", name, "--views", "2", "--seed", "3", "--recipe", RECIPE, "--chunk-rows",
                         "64", "--encoding", encoding, "--out", out)
    assert code == 0, text


def ensemble_args(store: Path, how: str, name: str, *extra: object, members: tuple[str, ...] = MEMBERS) -> list[object]:
    return ["ensemble", store, *[x for m in members for x in ("--teacher-name", m)], "--how", how, "--as", name, *extra]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three float32 members of different weights, and one ensemble per rule."""
    out = tmp_path_factory.mktemp("ens") / "s.zarr"
    for name in MEMBERS:
        precompute(out, name)
    for how, extra in (("mean-prob", ["--temperature", "2", "--weight", "a=2", "--weight", "b=1", "--weight", "c=1"]),
                       ("mean-logit", ["--weight", "a=3"]), ("confidence", []), ("best", [])):
        code, text = run_cli(*ensemble_args(out, how, how.replace("-", "_"), *extra))
        assert code == 0 and f"= {how} of a, b, c" in text, text
    return out


def log_softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    x = z.astype(np.float64) / t
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def reference(z: list[np.ndarray], labels: np.ndarray, how: str) -> np.ndarray:
    """Each rule written out from the issue's formulas, independently of kdcache (float64)."""
    rows = np.arange(len(labels))
    ce = np.stack([-log_softmax(x)[rows, labels] for x in z])  # (M, rows)
    if how == "mean_prob":
        w, t = np.array([0.5, 0.25, 0.25]), 2.0
        p = sum(wk * np.exp(log_softmax(x, t)) for wk, x in zip(w, z))
        return t * np.log(p)
    if how == "mean_logit":
        w = np.array([3.0, 1.0, 1.0]) / 5
        return sum(wk * x.astype(np.float64) for wk, x in zip(w, z))
    if how == "confidence":
        e = np.exp(ce - ce.max(axis=0))
        w = (1 - e / e.sum(axis=0)) / (len(z) - 1)  # (M, rows)
        return sum(w[k][:, None] * z[k].astype(np.float64) for k in range(len(z)))
    best = np.argmin(ce, axis=0)
    return np.stack([z[k][r] for r, k in enumerate(best)]).astype(np.float64)


def test_each_rule_matches_its_formula_from_a_plain_zarr_read(store: Path) -> None:
    g = zarr.open_group(store, mode="r")
    labels = g["labels"][:]
    members = [g[f"teachers/{m}/logits"][:] for m in MEMBERS]
    assert all(x.dtype == np.float32 for x in members)
    for how in ("mean_prob", "mean_logit", "confidence", "best"):
        got = g[f"teachers/{how}/logits"][:]
        assert got.dtype == np.float32
        for v in range(got.shape[0]):
            want = reference([x[v] for x in members], labels, how)
            t = 2.0 if how == "mean_prob" else 1.0  # the distribution a loss reads at the ensemble's T
            np.testing.assert_allclose(log_softmax(got[v], t), log_softmax(want, t), rtol=0, atol=2e-5)
        if how == "best":  # every row is one member's row, bit for bit
            assert all(any(x[v, r].tobytes() == got[v, r].tobytes() for x in members)
                       for v in range(got.shape[0]) for r in range(got.shape[1]))
        record = derivation(Store.open(store), how)
        assert record is not None and record["members"] == list(MEMBERS) and set(record["records"]) == set(MEMBERS)
    assert derivation(Store.open(store), "mean_prob")["weights"] == [0.5, 0.25, 0.25]
    assert derivation(Store.open(store), "confidence")["weights"] is None


def test_best_gives_ties_to_the_first_named() -> None:
    from kdcache.precompute.ensemble import Ensemble, combine

    same = np.array([[0.0, -1000.0, -2000.0]], dtype=np.float32)
    other = np.array([[0.0, -2000.0, -1000.0]], dtype=np.float32)  # both a cross-entropy of exactly 0 on class 0
    out = combine([other, same], np.array([0]), Ensemble(("x", "y"), "best", None))
    assert out.tobytes() == other.tobytes()
    out = combine([same, other], np.array([0]), Ensemble(("y", "x"), "best", None))
    assert out.tobytes() == same.tobytes()


def test_verify_replay_info_and_stats_read_derived_teachers(store: Path, tmp_path: Path) -> None:
    code, text = run_cli("verify", store, "--replay", "6", "--data", DATA)
    assert code == 0 and "replay mean_prob:" in text and "re-derived from its members" in text, text
    assert "bitwise equal" in text
    code, text = run_cli("info", store)
    assert code == 0, text
    assert "derived    mean-prob of a (0.5), b (0.25), c (0.25) at T=2 (members unchanged since)" in text, text
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    code, text = run_cli("stats", copy, "--teacher-name", "confidence")
    assert code == 0, text
    card = Store.open(copy).card("confidence")
    assert {"isats_tau", "class_table"} <= set(card.stats)


def test_distill_fgcr_reads_an_ensemble(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    assert run_cli("stats", copy, "--teacher-name", "mean_prob")[0] == 0
    code, text = run_cli("distill", copy, "--teacher-name", "mean_prob", "--data", DATA, "--val-data", VAL,
                         "--student", "import:tests.helpers:tiny", "--loss", "fgcr", "--epochs", "1",
                         "--batch-size", "32", "--out", tmp_path / "run")
    assert code == 0, text


def test_a_member_changed_after_derivation_is_refused_naming_kdcache_ensemble(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    s = Store.open(copy, mode="r+")  # as a re-run that wrote chunk 0 of member b with other bits
    rows = np.asarray(s.read_logits_chunk("b", 0, 0)) + np.float32(1.0)
    s.write_chunk("b", 0, 0, rows, None)
    code, text = run_cli("distill", copy, "--teacher-name", "mean_logit", "--data", DATA, "--val-data", VAL,
                         "--student", "import:tests.helpers:tiny", "--loss", "kd", "--epochs", "1",
                         "--out", tmp_path / "run")
    assert_one_line_error(code, text, "member 'b' changed", "kdcache ensemble", "--teacher-name a --teacher-name b",
                          "--weight a=0.6")
    assert not (tmp_path / "run").exists()
    code, text = run_cli("verify", copy)
    assert code == 1 and "member 'b' changed" in text, text
    code, text = run_cli("info", copy)
    assert code == 0 and "CHANGED since" in text, text
    # Derived again under a new name from the current rows, it is read again.
    code, text = run_cli(*ensemble_args(copy, "mean-logit", "mean_logit2", "--weight", "a=3"))
    assert code == 0, text


def test_refusals_are_one_line(store: Path, tmp_path: Path) -> None:
    assert_one_line_error(*run_cli(*ensemble_args(store, "best", "x", members=("a", "nope"))), "nope", exit_code=2)
    assert_one_line_error(*run_cli(*ensemble_args(store, "best", "x", members=("a",))), "two or more", exit_code=2)
    assert_one_line_error(*run_cli(*ensemble_args(store, "mean-prob", "x", "--weight", "a=0")), "positive",
                          exit_code=2)
    assert_one_line_error(*run_cli(*ensemble_args(store, "mean-prob", "x", "--weight", "z=1")), "'z'", exit_code=2)
    assert_one_line_error(*run_cli(*ensemble_args(store, "best", "x", "--weight", "a=2")), "weights apply",
                          exit_code=2)
    assert_one_line_error(*run_cli(*ensemble_args(store, "best", "x", "--temperature", "2")), "temperature",
                          exit_code=2)
    assert_one_line_error(*run_cli(*ensemble_args(store, "mean-prob", "x", "--weight", "a")), "NAME=WEIGHT",
                          exit_code=2)
    assert_one_line_error(*run_cli(*ensemble_args(store, "best", "mean_prob")), "already has a teacher 'mean_prob'")
    assert_one_line_error(*run_cli(*ensemble_args(tmp_path / "none.zarr", "best", "x")), "no store")
    assert "x" not in Store.open(store).teacher_names()


def test_a_sample_member_needs_the_approximation_flag_except_mean_prob_at_its_temperature(store: Path,
                                                                                          tmp_path: Path) -> None:
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    assert run_cli("convert", copy, "--teacher-name", "c", "--encoding", "sample:16@2", "--as", "cs")[0] == 0
    members = ("a", "b", "cs")
    assert_one_line_error(*run_cli(*ensemble_args(copy, "mean-logit", "x", members=members)),
                          "--allow-approximate-encoding", exit_code=2)
    code, text = run_cli(*ensemble_args(copy, "mean-prob", "x", "--temperature", "2", members=members))
    assert code == 0 and "warning" not in text.lower(), text
    code, text = run_cli(*ensemble_args(copy, "mean-logit", "y", "--allow-approximate-encoding", members=members))
    assert code == 0 and "approximation" in text, text


_KILL_AFTER = """
import os, signal, sys
from kdcache.store.teacher_writer import TeacherWriter
write, count = TeacherWriter.write, [0]
def killing_write(self, *args, **kwargs):
    write(self, *args, **kwargs)
    count[0] += 1
    if count[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-run, after three chunks and their records
TeacherWriter.write = killing_write
from kdcache_cli.main import app
sys.argv = ["kdcache", *sys.argv[1:]]
app()
"""


def test_a_killed_ensemble_resumes_to_the_same_bits(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    args = [str(x) for x in ensemble_args(copy, "confidence", "conf2", "--encoding", "int8")]
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert Store.open(copy).card("conf2").status == "writing"
    code, text = run_cli(*ensemble_args(copy, "confidence", "conf2", "--encoding", "int8"))
    assert code == 0 and "already stored" in text, text
    code, text = run_cli(*ensemble_args(copy, "confidence", "conf3", "--encoding", "int8"))  # uninterrupted
    assert code == 0, text
    g = zarr.open_group(copy, mode="r")
    resumed = {k: a[:] for k, a in g["teachers/conf2"].arrays()}
    fresh = {k: a[:] for k, a in g["teachers/conf3"].arrays()}
    assert set(resumed) == set(fresh) and all(resumed[k].tobytes() == fresh[k].tobytes() for k in resumed)

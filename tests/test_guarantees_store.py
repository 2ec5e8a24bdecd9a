"""Documented store guarantees, checked at their edge.

* docs/distill.md, "Cached mode" (data checks) and the needs table under "Losses": a statistic made with
  another ISATS grid or FGCR tau0 is refused in one line with the `kdcache stats` command that fixes it.
* docs/store-format.md, "Identity": the teacher-card fields the doc lists are the ones kdcache compares;
  a re-run of precompute with another --codec is refused naming `codec`.
* docs/store-format.md, "sample:N@T": the seed derivation of a row's draw, recomputed here from the doc's
  words with numpy alone, gives the ids and counts precompute stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
from pathlib import Path

import numpy as np
import zarr

from kdcache.store.manifest import TeacherCard
from tests.cli_helpers import assert_one_line_error, distill_args, precompute_args, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
PRECOMPUTE = {"data": DATA, "seed": 11}
DISTILL = {"data": DATA, "val_data": VAL, "batch_size": 64, "seed": 3}


def make_store(out: Path, *extra: object, **kwargs: object) -> Path:
    code, text = run_cli(*precompute_args(out, *extra, **{**PRECOMPUTE, **kwargs}))
    assert code == 0, text
    return out


def error_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("error:"))


def run_the_fix(line: str) -> None:
    """Run the `kdcache stats ...` command an error line names (between backquotes), as a user would."""
    fixes = re.findall(r"`(kdcache stats [^`]+)`", line)
    assert len(fixes) == 1, line
    code, text = run_cli(*shlex.split(fixes[0])[1:])
    assert code == 0, text


# ---------------------------------------------------------------- statistics made with other parameters


def test_isats_on_a_store_whose_tau_star_used_another_grid_is_refused_with_the_fix(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", "--encoding", "float32")
    code, text = run_cli("stats", store, "--grid", "1", "--grid", "2")
    assert code == 0, text
    run = tmp_path / "isats"
    code, text = run_cli(*distill_args(run, store=store, loss="isats",
                                       **DISTILL))  # the loss's default grid is 1 2 3 4 5 6 8
    assert_one_line_error(code, text, "searched over [1, 2]", "kdcache stats",
                          "--grid 1 --grid 2 --grid 3 --grid 4 --grid 5 --grid 6 --grid 8")
    assert not run.exists()
    run_the_fix(error_line(text))  # the named command is the fix
    code, text = run_cli(*distill_args(run, store=store, loss="isats", **DISTILL))
    assert code == 0, text


def test_fgcr_with_a_tau0_the_store_lacks_is_refused_naming_the_tau0_to_compute(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", "--encoding", "float32")
    code, text = run_cli("stats", store, "--tau0", "3")
    assert code == 0, text
    run = tmp_path / "fgcr"
    code, text = run_cli(*distill_args(run, "--loss-opt", "tau0=5", store=store, loss="fgcr", **DISTILL))
    assert_one_line_error(code, text, "tau0=5", "[3.0]", "kdcache stats", "--tau0 5")
    assert not run.exists()
    run_the_fix(error_line(text))
    entry = zarr.open_group(store, mode="r").attrs["kdcache"]["teachers"]["tiny"]["stats"]["class_table"]
    assert sorted(entry["tau0"]) == [3.0, 5.0]  # added, the earlier table kept
    code, text = run_cli(*distill_args(run, "--loss-opt", "tau0=5", store=store, loss="fgcr", **DISTILL))
    assert code == 0, text


def test_the_fix_for_a_missing_class_table_keeps_a_custom_tau_star_grid(tmp_path: Path) -> None:
    # One stats run recomputes every statistic from its options: the advised command must restate the
    # recorded grid, or adding FGCR's table would silently re-search ISATS' tau* over the default grid.
    store = make_store(tmp_path / "s.zarr", "--encoding", "float32")
    code, text = run_cli("stats", store, "--grid", "1", "--grid", "2", "--tau0", "3")
    assert code == 0, text
    run = tmp_path / "fgcr"
    code, text = run_cli(*distill_args(run, "--loss-opt", "tau0=5", store=store, loss="fgcr", **DISTILL))
    assert_one_line_error(code, text, "--tau0 5", "--grid 1 --grid 2")
    run_the_fix(error_line(text))
    stats = zarr.open_group(store, mode="r").attrs["kdcache"]["teachers"]["tiny"]["stats"]
    assert [[float(g) for g in grid] for grid in stats["isats_tau"]["grids"]] == [[1.0, 2.0]]
    assert sorted(stats["class_table"]["tau0"]) == [3.0, 5.0]
    code, text = run_cli(*distill_args(tmp_path / "isats", "--loss-opt", "grid=[1,2]", store=store, loss="isats",
                                       **DISTILL))
    assert code == 0, text


# ---------------------------------------------------------------- the teacher's identity


def documented_teacher_identity() -> set[str]:
    """The teacher-card fields docs/store-format.md's "Identity." bullet lists ("for a teacher: ...")."""
    text = (ROOT / "docs" / "store-format.md").read_text()
    bullet = re.search(r"\* \*\*Identity\.\*\*(.*?)(?=\n\* |\n\n)", text, re.S)
    assert bullet is not None, "docs/store-format.md lost its Identity bullet"
    listed = re.search(r"\(for a teacher: (.*?)\)", bullet.group(1), re.S)
    assert listed is not None, bullet.group(1)
    return set(re.findall(r"`(\w+)`", listed.group(1)))


def test_the_documented_teacher_identity_is_the_cards() -> None:
    declared = {f.name for f in dataclasses.fields(TeacherCard) if f.metadata.get("identity")}
    documented = documented_teacher_identity()
    assert len(documented) >= 10  # the parse found the list
    assert declared == documented, (f"identity in kdcache only: {sorted(declared - documented)}; "
                                    f"in docs/store-format.md only: {sorted(documented - declared)}")


def test_precompute_again_with_another_codec_is_refused_naming_codec(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", "--encoding", "float32")  # --codec none, the default
    before = zarr.open_group(store, mode="r").attrs["kdcache"]
    assert before["teachers"]["tiny"]["status"] == "complete"
    code, text = run_cli(*precompute_args(store, "--encoding", "float32", "--codec", "zstd", **PRECOMPUTE))
    assert_one_line_error(code, text, "made differently", "codec")
    assert zarr.open_group(store, mode="r").attrs["kdcache"] == before


# ---------------------------------------------------------------- the sample:N@T draw


def documented_draw(z: np.ndarray, seed: int, sample: int, view: int, name: str, n: int,
                    temperature: float) -> np.ndarray:
    """docs/store-format.md, sample:N@T, in its own words: row (i, v) of teacher NAME in a store of seed s
    draws with Generator(PCG64(SeedSequence([s, i, v, w0, w1, 0x5A4D0001]))), w0, w1 the first two
    little-endian uint32 words of SHA-256(NAME); the call multinomial(N, p), p = softmax(z/T) in
    float64, divided by its sum. Returns the counts per class."""
    w0, w1 = (int(w) for w in np.frombuffer(hashlib.sha256(name.encode()).digest()[:8], dtype="<u4"))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, sample, view, w0, w1, 0x5A4D0001])))
    x = z.astype(np.float64) / temperature
    p = np.exp(x - x.max())
    p = p / p.sum()
    return rng.multinomial(n, p / p.sum())


def test_sample_rows_are_the_documented_draws(tmp_path: Path) -> None:
    data = "synthetic:samples=128,classes=10,size=12,channels=1,seed=5"
    store = make_store(tmp_path / "s.zarr", "--encoding", "float32", "--teacher-name", "f32", data=data, seed=23)
    make_store(store, "--encoding", "sample:8@2", "--teacher-name", "s8", data=data, seed=23)
    g = zarr.open_group(store, mode="r")
    assert g.attrs["kdcache"]["views"]["seed"] == 23
    z = g["teachers/f32/logits"][:]  # (V, N, C) float32: the logits the draw was made from
    ids, counts = g["teachers/s8/sample_ids"][:], g["teachers/s8/sample_counts"][:]
    assert ids.dtype == np.uint16 and ids.shape == (2, 128, 8)  # S = min(N, C) slots
    for v in range(2):
        for i in range(128):
            drawn = documented_draw(z[v, i], 23, i, v, "s8", 8, 2.0)
            hit = np.flatnonzero(drawn)  # the distinct ids, ascending, then empty slots
            want_ids = np.full(8, 65535, dtype=np.uint16)
            want_counts = np.zeros(8, dtype=counts.dtype)
            want_ids[: len(hit)], want_counts[: len(hit)] = hit, drawn[hit]
            assert np.array_equal(ids[v, i], want_ids), (v, i, ids[v, i], want_ids)
            assert np.array_equal(counts[v, i], want_counts), (v, i, counts[v, i], want_counts)
    # The draw depends on the teacher's name: the same logits under another name draw otherwise.
    other = [documented_draw(z[0, i], 23, i, 0, "other", 8, 2.0) for i in range(128)]
    assert any(not np.array_equal(o, documented_draw(z[0, i], 23, i, 0, "s8", 8, 2.0)) for i, o in enumerate(other))

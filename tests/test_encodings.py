"""Encodings (docs/encodings.md, docs/store-format.md "Encodings"): what each stores, how a plain-zarr
reader decodes it, the dense-rebuild rule, the replayable sample draw, what each guarantees about logits
recomputed on another platform (verify --replay), and which losses consume which."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from kdcache import encodings, losses
from kdcache.encodings import Rows
from kdcache.encodings.consume import check_consumption
from kdcache.errors import StoreCorruptError, UsageError
from kdcache.store import Store
from tests.cli_helpers import assert_one_line_error, distill_args, precompute_args, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=192,classes=10,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=10,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
ENCODED = {"i8": "int8", "tk": "topk:3", "sm": "sample:16@2"}
PRECOMPUTE = {"data": DATA, "seed": 3}
DISTILL = {"data": DATA, "val_data": VAL, "batch_size": 64}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store: a float32 teacher and the same teacher in every compact encoding (precompute --encoding)."""
    out = tmp_path_factory.mktemp("enc") / "s.zarr"
    for name, encoding in {"f32": "float32", **ENCODED}.items():
        code, text = run_cli(*precompute_args(out, teacher_name=name, encoding=encoding, **PRECOMPUTE))
        assert code == 0, text
    return out


def model_like(rows: int, classes: int, seed: int = 0) -> np.ndarray:
    """Normal noise, a few related classes raised, one large target logit (float32)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=(rows, classes))
    z[np.arange(rows), rng.integers(0, classes, rows)] += rng.uniform(6, 14, rows)
    z[np.arange(rows), rng.integers(0, classes, rows)] += rng.uniform(2, 6, rows)
    return z.astype(np.float32)


def softmax64(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    x = z.astype(np.float64) / t
    x -= x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- parsing, one-line refusals


def test_spellings_parse_to_canonical_specs() -> None:
    assert encodings.parse("sample:64").spec == "sample:64@1"
    assert encodings.parse("sample:64@4.0").spec == "sample:64@4"
    assert encodings.parse("topk:32").spec == "topk:32"
    for bad in ("int4", "topk:", "topk:0", "sample:0", "sample:5@0", "sample:5@-1", "sample:5@nan", "float64"):
        with pytest.raises(UsageError, match="is not an encoding"):
            encodings.parse(bad)


def test_precompute_refuses_a_bad_encoding_in_one_line(tmp_path: Path) -> None:
    assert_one_line_error(*run_cli(*precompute_args(tmp_path / "a.zarr", teacher_name="t", encoding="topk:x",
                                                    **PRECOMPUTE)), "--encoding", "topk:x",
                          exit_code=2)
    assert_one_line_error(*run_cli(*precompute_args(tmp_path / "b.zarr", teacher_name="t", encoding="topk:10",
                                                    **PRECOMPUTE)), "K < C = 10",
                          exit_code=2)
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()  # nothing written


# ---------------------------------------------------------------- the documented plain-zarr decode


def test_plain_zarr_reader_decodes_every_encoding_as_documented(store: Path) -> None:
    """Open with zarr only, decode with the code of docs/store-format.md, compare with the float32 teacher."""
    g = zarr.open_group(store, mode="r")
    teachers = g.attrs["kdcache"]["teachers"]
    C = teachers["f32"]["num_classes"]
    assert {teachers[n]["encoding"] for n in ENCODED} == set(ENCODED.values())
    for v in range(2):
        logits = g["teachers/f32/logits"][v].astype(np.float32)
        # int8: within the stated bound
        t = g["teachers/i8"]
        q, affine = t["q"][v], t["affine"][v]
        hi, step = affine[:, :1], affine[:, 1:2]
        z = hi - step * (np.float32(255) - q.astype(np.float32))
        bound = step[:, 0].astype(np.float64) / 2 + 2.0**-22 * (np.abs(hi[:, 0]) + 255 * step[:, 0])
        assert (np.abs(z.astype(np.float64) - logits).max(axis=1) <= bound).all()
        assert np.array_equal(z.max(axis=1), logits.max(axis=1))  # the top logit comes back exactly
        # topk:3: ids equal the float32 store's top 3, tail mass at T=1 exact
        t = g["teachers/tk"]
        ids, vals = t["topk_ids"][v].astype(np.int64), t["topk_values"][v].astype(np.float64)
        lse, A = t["lse"][v].astype(np.float64), t["tail_lse"][v].astype(np.float64)
        assert np.array_equal(ids, np.argsort(-logits.astype(np.float64), axis=1, kind="stable")[:, :3])
        p = softmax64(logits)
        true_tail = 1 - np.take_along_axis(p, ids, axis=1).sum(axis=1)
        np.testing.assert_allclose(np.exp(A[:, 0] - lse), true_tail, rtol=2e-6, atol=0)
        np.testing.assert_allclose(np.exp(vals - lse[:, None]), np.take_along_axis(p, ids, axis=1), rtol=2e-3)
        # sample:16@2: counts sum to N, ids are classes, q_hat as documented
        t = g["teachers/sm"]
        ids, counts = t["sample_ids"][v].astype(np.int64), t["sample_counts"][v]
        assert (counts.sum(axis=1) == 16).all() and ids[counts > 0].max() < C
        assert (ids[counts == 0] == 65535).all()
        q_hat = np.zeros((ids.shape[0], C))
        rows, slots = np.nonzero(counts)
        q_hat[rows, ids[rows, slots]] = counts[rows, slots] / 16
        decoded = Store.open(store).read_logits_chunk("sm", v, 0)
        np.testing.assert_allclose(softmax64(decoded[:64], 2.0), q_hat[:64], atol=1e-6)


def test_checksum_records_are_blake2b_over_the_parts_in_order(store: Path) -> None:
    g = zarr.open_group(store, mode="r")
    order = {"i8": ["q", "affine"], "tk": ["topk_ids", "topk_values", "lse", "tail_lse"],
             "sm": ["sample_ids", "sample_counts"], "f32": ["logits"]}
    for name, parts in order.items():
        h = hashlib.blake2b(digest_size=8)
        for part in parts:
            h.update(np.ascontiguousarray(g[f"teachers/{name}/{part}"][1, 64:128]).tobytes())
        assert int.from_bytes(h.digest(), "little") == int(g[f"teachers/{name}/checksums"][1, 1]), name


def test_a_corrupted_part_is_named_by_readers_and_verify(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "c.zarr"
    shutil.copytree(store, copy)
    arr = zarr.open_array(copy / "teachers" / "tk" / "lse", mode="r+")
    arr[0, 70] = arr[0, 70] + 1  # one float of one part of chunk 1
    code, text = run_cli("verify", copy)
    assert code == 1 and "teachers/tk/logits view 0 chunk 1" in text and "checksum mismatch" in text, text
    with pytest.raises(Exception, match="does not match its checksum"):
        Store.open(copy).read_logits_chunk("tk", 0, 1)


def test_a_part_changed_after_a_verified_read_is_hashed_again(store: Path, tmp_path: Path) -> None:
    """A read-only store remembers a verified multi-part chunk only while none of its part files changed."""
    copy = tmp_path / "m.zarr"
    shutil.copytree(store, copy)
    reader = Store.open(copy)
    first = reader.read_logits_chunk("i8", 1, 2)
    assert np.array_equal(reader.read_logits_chunk("i8", 1, 2), first)  # remembered, still right
    affine = zarr.open_array(copy / "teachers" / "i8" / "affine", mode="r+")
    affine[1, 130] = affine[1, 130] * 2  # the second part of chunk 2 (rows 128-191), rewritten
    with pytest.raises(Exception, match="does not match its checksum"):
        reader.read_logits_chunk("i8", 1, 2)


@pytest.mark.parametrize("name", ["i8", "tk", "sm"])
def test_the_distill_reader_yields_the_documented_decode_of_each_row(store: Path, name: str) -> None:
    """The reader decodes only a batch's gathered rows (packed parts): the same rows as the chunk decode."""
    from kdcache.distill.cached_rows import CachedRows, epoch_plan

    s = Store.open(store)
    plan = epoch_plan(0, 2, s.num_samples, s.num_views, "random", window=100)
    got = torch.cat([b["teacher_logits"] for b in CachedRows(s, name, decode_temperature=4.0).iterate(plan, 48)])
    dense = np.stack([np.concatenate([s.read_logits_chunk(name, v, j, temperature=4.0) for j in range(3)])
                      for v in range(2)])
    want = dense[plan.views[plan.order], plan.order]
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), want)


def test_info_shows_bytes_per_view_for_each_teacher(store: Path) -> None:
    code, text = run_cli("info", store)
    assert code == 0, text
    for row_bytes in ("40 B per", "18 B per", "32 B per", "30 B per"):  # float32, int8, topk:3, sample:16@2
        assert row_bytes in text, text
    assert text.count("MB per view on disk") == 4


def test_precompute_with_an_encoding_resumes_to_the_same_bits(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "r.zarr"
    shutil.copytree(store, copy)
    sums = zarr.open_array(copy / "teachers" / "sm" / "checksums", mode="r+")
    sums[1, 2] = 0  # chunk 2 of view 1 as if the run was killed before its record
    shutil.rmtree(copy / "teachers" / "sm" / "sample_ids" / "c" / "1" / "2")
    code, text = run_cli(*precompute_args(copy, teacher_name="sm", encoding="sample:16@2", **PRECOMPUTE))
    assert code == 0 and "resuming" in text, text
    a, b = zarr.open_group(store, mode="r"), zarr.open_group(copy, mode="r")
    for part in ("sample_ids", "sample_counts", "checksums"):
        assert np.array_equal(a[f"teachers/sm/{part}"][:], b[f"teachers/sm/{part}"][:]), part


# ---------------------------------------------------------------- the dense-rebuild rule


@pytest.mark.parametrize("classes", [10, 1000])
def test_topk_rebuild_keeps_top_probabilities_and_t1_tail_mass_exactly(classes: int) -> None:
    z = model_like(64, classes, seed=classes)
    enc = encodings.parse("topk:5")
    parts = enc.encode(z, Rows(0, 0, np.arange(64), "t"))
    dense = enc.decode(parts, classes, temperature=1.0)
    p = softmax64(dense)
    ids = parts["topk_ids"].astype(np.int64)
    m = np.exp(parts["tail_lse"][:, 0].astype(np.float64) - parts["lse"].astype(np.float64))
    top = np.take_along_axis(p, ids, axis=1)
    np.testing.assert_allclose(1 - top.sum(axis=1), m, rtol=1e-5, atol=1e-12)
    v = parts["topk_values"].astype(np.float64)
    np.testing.assert_allclose(top, (1 - m)[:, None] * softmax64(v), rtol=1e-5, atol=1e-12)
    # and M is the float32 teacher's true tail mass
    np.testing.assert_allclose(m, 1 - np.take_along_axis(softmax64(z), ids, axis=1).sum(axis=1), rtol=2e-6)


@pytest.mark.parametrize("temperature", [2.0, 4.0, 8.0])
def test_temperature_aware_rebuild_gives_the_true_tail_mass_at_stored_temperatures(temperature: float) -> None:
    z = model_like(64, 1000, seed=1)
    enc = encodings.parse("topk:16")
    parts = enc.encode(z, Rows(0, 0, np.arange(64), "t"))
    ids = parts["topk_ids"].astype(np.int64)
    true_tail = 1 - np.take_along_axis(softmax64(z, temperature), ids, axis=1).sum(axis=1)
    aware = softmax64(enc.decode(parts, 1000, temperature=temperature), temperature)
    const = softmax64(enc.decode(parts, 1000, temperature=temperature, tail="constant"), temperature)
    aware_tail = 1 - np.take_along_axis(aware, ids, axis=1).sum(axis=1)
    const_tail = 1 - np.take_along_axis(const, ids, axis=1).sum(axis=1)
    np.testing.assert_allclose(aware_tail, true_tail, rtol=5e-3)
    # A constant fill is the chord of the convex A_R: it over-states the tail at T > 1.
    assert (const_tail > true_tail).mean() > 0.9


def test_int8_bound_holds_at_the_edges() -> None:
    rows = np.stack([np.zeros(8), np.full(8, 1e4), np.linspace(-1e4, 1e4, 8), np.r_[np.zeros(7), 3.0]])
    z = rows.astype(np.float32)
    enc = encodings.parse("int8")
    parts = enc.encode(z, Rows(0, 0, np.arange(4), "t"))
    err = np.abs(enc.decode(parts, 8).astype(np.float64) - z).max(axis=1)
    assert (err <= encodings.Int8Encoding.bound(parts["affine"])).all()
    assert err[0] == 0 and err[1] == 0  # constant rows are exact


# ---------------------------------------------------------------- replay on another platform


def _near(z: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits another platform may have computed: within 0.9 x the slack of ``z``, and the per-row slack."""
    slack = 1e-4 * np.maximum(1.0, np.abs(z).max(axis=1).astype(np.float64))
    noise = np.random.default_rng(seed).uniform(-0.9, 0.9, z.shape) * slack[:, None]
    return (z + noise).astype(np.float32), slack


@pytest.mark.parametrize("spec", ["float16", "float32", "int8", "topk:5", "sample:16@2"])
def test_replay_rule_accepts_every_encoding_of_logits_within_the_slack(spec: str) -> None:
    z = model_like(512, 100, seed=6)
    if spec.startswith("topk"):  # ties at the edge of the top 5: another platform may swap them
        order = np.argsort(-z, axis=1, kind="stable")
        rows = np.arange(len(z))
        z[rows, order[:, 5]] = z[rows, order[:, 4]]
    enc, rows = encodings.parse(spec), Rows(0, 0, np.arange(512), "t")
    elsewhere, slack = _near(z)
    parts, exact = enc.encode(elsewhere, rows), enc.encode(z, rows)
    assert enc.replay_mismatch(parts, z, slack) <= 1.0
    if spec == "int8":
        assert (parts["q"] != exact["q"]).sum() > 10  # codes rounded the other way, as the rule allows
    if spec.startswith("topk"):
        assert (np.sort(parts["topk_ids"], axis=1) != np.sort(exact["topk_ids"], axis=1)).any(axis=1).sum() > 10


def test_replay_rule_fails_what_lies_beyond_the_bound() -> None:
    z = model_like(64, 100, seed=7)
    rows = Rows(0, 0, np.arange(64), "t")
    elsewhere, slack = _near(z)
    enc = encodings.parse("int8")
    parts = enc.encode(elsewhere, rows)
    parts["q"][3, np.flatnonzero(parts["q"][3] >= 3)[0]] -= np.uint8(3)  # three quantisation steps
    assert enc.replay_mismatch(parts, z, slack) > 4
    parts = enc.encode(elsewhere, rows)
    parts["affine"][5, 1] *= np.float32(1.01)  # a step that would widen the bound
    assert enc.replay_mismatch(parts, z, slack) > 1
    enc = encodings.parse("topk:5")
    good = enc.encode(elsewhere, rows)
    for part, row, change in (("topk_values", 2, lambda v: v * np.float16(1.01)),  # 1e-2 relative
                              ("topk_ids", 4, lambda v: np.int64(np.argmin(z[4]))),  # a member no tie explains
                              ("lse", 6, lambda v: v + np.float32(3 * slack[6])),
                              ("tail_lse", 8, lambda v: v + np.float32(3 * slack[8])),
                              ("lse", 9, lambda v: np.float32(np.nan))):
        parts = {k: a.copy() for k, a in good.items()}
        target = parts[part][row]
        if target.ndim:
            target[-1] = change(target[-1])
        else:
            parts[part][row] = change(target)
        assert enc.replay_mismatch(parts, z, slack) > 1, part
    enc = encodings.parse("float16")
    parts = enc.encode(elsewhere, rows)
    parts["logits"][1, 7] += np.float16(0.05)
    assert enc.replay_mismatch(parts, z, slack) > 1


def test_replay_rule_of_a_sample_checks_its_structure_and_that_each_drawn_class_had_a_chance() -> None:
    z = model_like(32, 20, seed=8)
    z[:, 0] = z.max(axis=1) - 400  # probability exp(-200) at T=2: never drawn by a correct store
    enc, rows = encodings.parse("sample:16@2"), Rows(0, 0, np.arange(32), "t")
    elsewhere, slack = _near(z)
    good = enc.encode(elsewhere, rows)
    assert enc.replay_mismatch(good, z, slack) <= 1.0 and not (good["sample_ids"] == 0).any()
    parts = {k: a.copy() for k, a in good.items()}
    parts["sample_ids"][0, 0] = 0  # drawn class 0: the lowest id, so still ascending and distinct
    assert enc.replay_mismatch(parts, z, slack) > 1e6
    for part, at, value, needle in (("sample_counts", (1, 0), good["sample_counts"][1, 0] + 1, "summing to 17"),
                                    ("sample_ids", (2, 1), good["sample_ids"][2, 0], "not ascending and distinct")):
        parts = {k: a.copy() for k, a in good.items()}
        parts[part][at] = value
        with pytest.raises(StoreCorruptError, match=needle):
            enc.replay_mismatch(parts, z, slack)


def test_decoding_a_sample_row_with_a_count_in_an_empty_slot_is_a_one_line_error() -> None:
    """A damaged chunk whose checksum record was rewritten: no IndexError, a kdcache error saying what is wrong."""
    enc = encodings.parse("sample:16@4")
    parts = enc.encode(model_like(4, 40, seed=9), Rows(0, 0, np.arange(4), "t"))
    row = int(np.flatnonzero((parts["sample_counts"] == 0).any(axis=1))[0])
    slot = int(np.flatnonzero(parts["sample_counts"][row] == 0)[0])
    parts["sample_counts"][row, slot] = 2
    for decode in (lambda: enc.decode(parts, 40), lambda: enc.probabilities(parts, 40)):
        with pytest.raises(StoreCorruptError) as info:
            decode()
        text = str(info.value)
        assert "\n" not in text and text.endswith("precompute it again into a new --out"), text
        assert f"holds the count 2 in slot {slot}, whose id 65535 is the empty-slot marker, not a class (0..39)" in text


# ---------------------------------------------------------------- the sample draw


def test_sample_draw_replays_whatever_the_chunking_and_depends_on_seed_view_sample_teacher() -> None:
    z = model_like(40, 100, seed=3)
    enc = encodings.parse("sample:32@2")
    whole = enc.encode(z, Rows(7, 1, np.arange(100, 140), "t"))
    halves = [enc.encode(z[a:b], Rows(7, 1, np.arange(100 + a, 100 + b), "t")) for a, b in ((0, 13), (13, 40))]
    for part in whole:
        assert np.array_equal(whole[part], np.concatenate([h[part] for h in halves]))
    for other in (Rows(8, 1, np.arange(100, 140), "t"), Rows(7, 2, np.arange(100, 140), "t"),
                  Rows(7, 1, np.arange(101, 141), "t"), Rows(7, 1, np.arange(100, 140), "u")):
        assert not np.array_equal(enc.encode(z, other)["sample_ids"], whole["sample_ids"])


def test_sample_estimate_is_unbiased() -> None:
    """Averaged over many replayable draws (different samples of one row), q_hat -> softmax(z/T)."""
    z = np.repeat(model_like(1, 50, seed=4), 4000, axis=0)
    enc = encodings.parse("sample:8@4")
    q_hat = enc.probabilities(enc.encode(z, Rows(0, 0, np.arange(4000), "t")), 50).astype(np.float64)
    q = softmax64(z[:1], 4.0)[0]
    se = np.sqrt(q * (1 - q) / (8 * 4000))
    assert (np.abs(q_hat.mean(axis=0) - q) < 5 * se + 1e-9).all()


# ---------------------------------------------------------------- which losses consume which encodings


def test_losses_declare_what_they_consume() -> None:
    sample4, sample1, topk = (encodings.parse(s) for s in ("sample:64@4", "sample:64@1", "topk:8"))
    kd, dkd = losses.spec("kd"), losses.spec("dkd")
    assert check_consumption(sample4, kd, {"temperature": 4})[1] is None
    assert check_consumption(topk, dkd, {})[0] == 4.0  # decoded at the loss's temperature
    with pytest.raises(UsageError, match="accepts float16, float32, int8, topk:K, sample:N@4;"):
        check_consumption(sample1, kd, {})
    with pytest.raises(UsageError, match="non-linear map.*accepts float16, float32, int8, topk:K;"):
        check_consumption(sample4, dkd, {})
    assert "biased" in (check_consumption(sample4, dkd, {}, allow_approximate=True)[1] or "")
    linear = {n for n in losses.names() if losses.spec(n).linear_teacher}
    assert linear == {"kd", "slkd"}


def test_kd_on_pseudo_logits_has_the_gradient_of_kd_on_q_hat() -> None:
    """KD reads softmax(pseudo/T) = q_hat: its student gradient is that of T²·X(q_hat, softmax(s/T))."""
    z = model_like(16, 20, seed=5)
    enc = encodings.parse("sample:32@3")
    parts = enc.encode(z, Rows(0, 0, np.arange(16), "t"))
    q_hat = torch.from_numpy(enc.probabilities(parts, 20)).double()
    s = torch.randn(16, 20, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(16, dtype=torch.long)
    pseudo = torch.from_numpy(enc.decode(parts, 20)).double()
    (g1,) = torch.autograd.grad(losses.kd(s, pseudo, y, temperature=3.0, ce_weight=0.0, kd_weight=1.0)["loss"], s)
    x = -(9.0 * (q_hat * torch.log_softmax(s / 3.0, dim=1)).sum(1)).mean()
    (g2,) = torch.autograd.grad(x, s)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-9)


def test_distill_runs_from_each_encoding_a_loss_accepts_and_refuses_the_others(store: Path, tmp_path: Path) -> None:
    for name, loss, opts in (("sm", "kd", ["--loss-opt", "temperature=2"]), ("tk", "nkd", []), ("i8", "dkd", [])):
        code, text = run_cli(*distill_args(tmp_path / f"{name}-{loss}", "--loss", loss, *opts, store=store,
                                           teacher_name=name, **DISTILL))
        assert code == 0, text
    assert_one_line_error(*run_cli(*distill_args(tmp_path / "x", "--loss", "nkd", store=store, teacher_name="sm",
                                                 **DISTILL)),
                          "accepts float16, float32, int8, topk:K;", "--allow-approximate-encoding", exit_code=2)
    assert_one_line_error(*run_cli(*distill_args(tmp_path / "y", "--loss", "kd", store=store, teacher_name="sm",
                                                 **DISTILL)),
                          "T=4", "sample:N@4", exit_code=2)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_allow_approximate_encoding_trains_with_a_warning(store: Path, tmp_path: Path) -> None:
    code, text = run_cli(*distill_args(tmp_path / "a", "--loss", "nkd", "--allow-approximate-encoding", store=store,
                                       teacher_name="sm", **DISTILL))
    assert code == 0 and "biased" in text, text

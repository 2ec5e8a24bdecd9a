"""Tests of kdcache.losses against docs/methods.md.

Layers, from generic to specific:

1. the registry and LossSpec contract (names, errors, resolve, store_stats);
2. one parametrized suite over EVERY registered loss (values, shapes, which
   tensors get gradients, dtypes, large logits), fed only from what its
   LossSpec declares, as the distill loop will be;
3. closed forms the spec implies (KD(t, t) = 0, ATS(τ1=τ2) = KD in X form, ...);
4. independent float64 numpy references written from the formulas, on inputs
   with wrong teachers, extremely confident teachers and large logits;
5. golden values (tests/data/golden_losses.json) and hypothesis properties.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdcache import losses
from kdcache.errors import LossConfigError
from kdcache.losses import _registry
from kdcache.registry import DuplicateNameError

DATA = Path(__file__).parent / "data"
ALL = losses.names()
EXPECTED_NAMES = {"ce", "kd", "dkd", "nkd", "tf_nkd", "la", "dtd", "ats", "isats", "fgcr", "slkd"}
FAST = settings(max_examples=25, deadline=None)


def _load_golden_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_golden_losses", DATA / "make_golden_losses.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


golden_maker = _load_golden_module()


# ============================================================================
# Inputs


def batch(b: int = 6, c: int = 7, seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(b, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    t = (torch.randn(b, c, generator=g, dtype=torch.float64) * scale * 1.5).to(dtype)
    y = torch.randint(0, c, (b,), generator=g)
    return s, t, y


def train_set(c: int, dtype: torch.dtype = torch.float64, seed: int = 1):
    """Teacher logits for a "training split" holding every class (FGCR's table)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(3 * c, c, generator=g, dtype=torch.float64) * 3).to(dtype), torch.arange(3 * c) % c


def loop_kwargs(name: str, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, hparams: dict | None = None) -> dict:
    """Call-time inputs built from the LossSpec alone, as the distill loop does."""
    spec = losses.spec(name)
    kwargs: dict[str, Any] = {}
    if spec.needs_epoch:
        kwargs["epoch"] = 5
    for stat, params in spec.store_stats(hparams).items():
        if stat == "class_table":
            tt, ty = train_set(s.shape[1], t.dtype)
            kwargs[stat] = losses.class_table(tt, ty, s.shape[1], **params)
        elif stat == "tau_star":
            kwargs[stat] = losses.isats_tau_star(t, y, **params)
        else:  # a new statistic needs a provider here
            raise AssertionError(f"no test provider for statistic {stat!r}")
    if spec.extra_networks:
        kwargs[spec.extra_networks_arg] = [
            (torch.randn(s.shape, dtype=torch.float64) * 2).to(s.dtype).requires_grad_() for _ in range(spec.extra_networks)
        ]
    return kwargs


def hard_rows(dtype: torch.dtype = torch.float64):
    """B=8, C=6: the inputs the spec's verification uses, one awkward case per row."""
    rng = np.random.default_rng(7)
    b, c = 8, 6
    s = rng.normal(0, 2, (b, c))
    t = rng.normal(0, 3, (b, c))
    y = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    t[1, 1] = t[1].min() - 2  # wrong teacher
    t[2, 2] = t[2].max() + 1000  # extremely confident teacher (underflows even in float64 at T=1)
    t[3, 0] = t[3].max() + 300  # extremely confident AND wrong
    s[4] = rng.normal(0, 1e4, c)  # large student logits
    t[5] = rng.normal(0, 1e4, c)  # large teacher logits
    t[6, 0] = t[6].max()  # label tied with another maximum: not wrong
    t[6, 3] = t[6, 0]
    s[7, 1] = s[7].max() + 2000  # student non-target mass underflows (DKD reference code: inf)
    s_t, t_t = torch.tensor(s).to(dtype), torch.tensor(t).to(dtype)
    return s_t, t_t, torch.tensor(y)


# ============================================================================
# 1. Registry and LossSpec


def test_registry_holds_exactly_the_methods_of_the_spec():
    assert set(ALL) == EXPECTED_NAMES
    for name in ALL:
        assert losses.get(name) is losses.spec(name).fn
        assert losses.spec(name).name == name
        assert losses.spec(name).summary


def test_unknown_name_lists_valid_names():
    with pytest.raises(LossConfigError) as info:
        losses.get("hinton")
    for name in ALL:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_spec_declares_what_each_method_needs():
    needs_teacher = {n for n in ALL if losses.spec(n).needs_teacher}
    assert needs_teacher == EXPECTED_NAMES - {"ce", "tf_nkd"}
    assert [n for n in ALL if losses.spec(n).needs_epoch] == ["dkd"]
    assert {n: losses.spec(n).extra_networks for n in ALL if losses.spec(n).extra_networks} == {"slkd": 2}
    assert {n: losses.spec(n).extra_networks_arg for n in ALL if losses.spec(n).extra_networks_arg} == {"slkd": "slt_logits"}
    assert losses.spec("slkd").call_inputs == ("slt_logits",)
    assert losses.spec("fgcr").stats["class_table"]["required"] is True
    assert losses.spec("isats").stats["tau_star"]["required"] is False
    assert {n for n in ALL if losses.spec(n).stats} == {"fgcr", "isats"}


def test_store_stats():
    assert losses.spec("fgcr").store_stats() == {"class_table": {"tau0": 3.0}}
    assert losses.spec("fgcr").store_stats({"tau": 6}) == {"class_table": {"tau0": 5.0}}
    assert losses.spec("fgcr").store_stats({"tau0": 2.5}) == {"class_table": {"tau0": 2.5}}
    assert losses.spec("isats").store_stats() == {"tau_star": {"grid": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]}}
    # Two spellings of one grid key the same stored statistic.
    assert losses.spec("isats").store_stats({"grid": [4, 1, 2]}) == {"tau_star": {"grid": [1.0, 2.0, 4.0]}}
    for name in EXPECTED_NAMES - {"fgcr", "isats"}:
        assert losses.spec(name).store_stats() == {}


def test_defaults_are_the_spec_defaults():
    resolved = {n: losses.spec(n).resolve() for n in ALL}
    assert resolved["kd"] == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
    assert resolved["dkd"] == {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 20.0, "ce_weight": 1.0}
    assert resolved["nkd"] == {"gamma": 3.5, "temperature": 3.0}
    assert resolved["la"] == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "variant": "ps", "epsilon": None}
    assert resolved["dtd"] == {
        "variant": "flsw", "base_temperature": 4.0, "beta": 1.0, "gamma": 2.0, "scale": "none", "ce_weight": 1.0
    }
    assert losses.spec("dtd").resolve({"variant": "cwsm"})["beta"] == 0.05
    assert resolved["ats"] == {"tau1": 4.0, "tau2": 3.0, "student_temperature": 1.0, "lam": 0.5}
    assert resolved["isats"] == {"grid": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0), "student_temperature": 1.0, "lam": 0.5}
    assert resolved["fgcr"] == {"tau": 4.0, "alpha": 0.5, "student_temperature": 1.0, "lam": 0.5, "tau0": 3.0}
    assert resolved["slkd"] == {
        "temperature": 4.0, "a": 0.1, "b": 0.9, "p": 1.0, "a_cs": 1.0, "b_cs": 1.0, "detach_fused_slt": False
    }
    assert resolved["ce"] == resolved["tf_nkd"] == {}


def test_resolve_returns_fresh_dicts_and_json_configs():
    spec = losses.spec("kd")
    first = spec.resolve({"temperature": 2})
    first["temperature"] = 99.0
    assert spec.resolve()["temperature"] == 4.0
    assert spec.resolve({"temperature": 2}) == {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 0.9}
    for name in ALL:
        config = losses.spec(name).config()
        assert json.loads(json.dumps(config)) == config
        assert config["name"] == name


def test_unknown_hyperparameter_lists_valid_ones():
    with pytest.raises(LossConfigError, match="temperature, ce_weight, kd_weight"):
        losses.spec("kd").resolve({"T": 4})
    with pytest.raises(LossConfigError, match="call-time input"):
        losses.spec("dkd").resolve({"epoch": 3})
    s, t, y = batch()
    with pytest.raises(LossConfigError, match="'tau'"):
        losses.kd(s, t, y, tau=4.0)


@pytest.mark.parametrize(
    ("name", "hparams", "match"),
    [
        ("kd", {"temperature": 0}, "temperature must be > 0"),
        ("kd", {"temperature": -1.0}, "temperature must be > 0"),
        ("kd", {"temperature": float("nan")}, "temperature must be finite"),
        ("kd", {"temperature": True}, "temperature must be a number"),
        ("kd", {"temperature": "4"}, "temperature must be a number"),
        ("kd", {"ce_weight": -0.1}, "ce_weight must be >= 0"),
        ("dkd", {"warmup": 0}, "warmup must be > 0"),
        ("nkd", {"temperature": 0.0}, "temperature must be > 0"),
        ("ats", {"tau2": 0}, "tau2 must be > 0"),
        ("ats", {"lam": 1.5}, r"lam must be in \[0, 1\]"),
        ("isats", {"grid": []}, "grid must not be empty"),
        ("isats", {"grid": [1, 0]}, "grid must be > 0"),
        ("isats", {"grid": [1, 1, 2]}, "must not repeat"),
        ("fgcr", {"tau": 1.0}, "tau0 defaults to tau - 1 = 0"),
        ("fgcr", {"tau0": -1.0}, "tau0 must be > 0"),
        ("fgcr", {"alpha": 2.0}, "alpha must be in"),
        ("la", {"variant": "lsr"}, "needs an explicit epsilon"),
        ("la", {"epsilon": 0.1}, "epsilon only applies to variant='lsr'"),
        ("la", {"variant": "swap"}, "variant must be one of 'ps', 'lsr'"),
        ("dtd", {"scale": "per_row"}, "scale must be one of 'none', 'tau_sq'"),
        ("dtd", {"base_temperature": 0}, "base_temperature must be > 0"),
        ("slkd", {"detach_fused_slt": "yes"}, "must be True or False"),
    ],
)
def test_invalid_hyperparameters_raise(name: str, hparams: dict, match: str):
    with pytest.raises(LossConfigError, match=match):
        losses.spec(name).resolve(hparams)
    # The loss function validates the same way when called directly.
    s, t, y = batch()
    with pytest.raises(LossConfigError, match=match):
        losses.get(name)(s, t, y, **hparams, **loop_kwargs(name, s, t, y))


def test_duplicate_registration_raises_and_changes_nothing():
    before = _registry.LOSSES.items()
    with pytest.raises(DuplicateNameError, match="loss 'kd' is already registered"):

        @losses.register("kd", parsers={}, summary="dup")
        def kd_again(student_logits, teacher_logits, labels):  # pragma: no cover - never registered
            return {}

    assert _registry.LOSSES.items() == before


def test_register_adds_a_working_loss(monkeypatch):
    monkeypatch.setattr(_registry.LOSSES, "_entries", dict(_registry.LOSSES.items()))  # restored after the test

    @losses.register("half_ce", parsers={"w": _registry.non_negative}, summary="test loss", needs_teacher=False)
    def half_ce(student_logits, teacher_logits, labels, *, w: float = 0.5):
        value = torch.nn.functional.cross_entropy(student_logits, labels)
        return {"loss": w * value, "ce": value}

    s, _, y = batch()
    assert "half_ce" in losses.names()
    assert losses.spec("half_ce").defaults == {"w": 0.5}
    out = losses.get("half_ce")(s, None, y, w=2)
    torch.testing.assert_close(out["loss"], 2 * out["ce"])
    with pytest.raises(TypeError, match="needs a default and a parser"):

        @losses.register("broken", parsers={}, summary="x")
        def broken(student_logits, teacher_logits, labels, *, w: float = 1.0):  # pragma: no cover
            return {}


# ============================================================================
# 2. Every registered loss


@pytest.mark.parametrize("name", ALL)
def test_every_loss_values_shapes_and_gradient_routing(name: str):
    s, t, y = batch()
    s.requires_grad_()
    t.requires_grad_()
    kwargs = loop_kwargs(name, s, t, y)
    table = kwargs.get("class_table")
    if table is not None:
        table.requires_grad_()
    out = losses.get(name)(s, t, y, **kwargs)
    assert "loss" in out and "ce" in out
    for key, value in out.items():
        assert value.shape == (), key
        assert value.dtype == torch.float32, key
        assert torch.isfinite(value), key
    out["loss"].backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None, "teacher logits are constants"
    if table is not None:
        assert table.grad is None, "the class table is a constant"
    for u in kwargs.get("slt_logits", []):
        assert u.grad is not None and torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("dtype", "maths"),
    [(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float32, torch.float32), (torch.float64, torch.float64)],
)
def test_every_loss_dtypes(name: str, dtype: torch.dtype, maths: torch.dtype):
    s, t, y = batch(dtype=dtype)
    s.requires_grad_()
    kwargs = loop_kwargs(name, s, t, y)
    out = losses.get(name)(s, t, y, **kwargs)
    assert all(v.dtype == maths for v in out.values())
    out["loss"].backward()
    assert s.grad.dtype == dtype and torch.isfinite(s.grad).all()
    # The maths runs at `maths` precision: equal to feeding upcast logits.
    ref_kwargs = {k: ([u.detach().to(maths) for u in v] if k == "slt_logits" else v) for k, v in kwargs.items()}
    ref = losses.get(name)(s.detach().to(maths), t.to(maths), y, **ref_kwargs)
    for key in out:
        torch.testing.assert_close(out[key].detach(), ref[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_every_loss_finite_for_logits_up_to_1e4(name: str, dtype: torch.dtype):
    s, t, y = batch(b=8, c=10, seed=3, dtype=dtype, scale=1e4 / 3)  # teacher reaches ±1e4
    s = s.clamp(-1e4, 1e4).requires_grad_()
    t = t.clamp(-1e4, 1e4)
    kwargs = loop_kwargs(name, s, t, y)
    out = losses.get(name)(s, t, y, **kwargs)
    assert all(torch.isfinite(v) for v in out.values()), out
    out["loss"].backward()
    assert torch.isfinite(s.grad).all()
    for u in kwargs.get("slt_logits", []):
        assert torch.isfinite(u.grad).all()


@pytest.mark.parametrize("name", ALL)
def test_every_loss_validates_shapes(name: str):
    s, t, y = batch()
    kwargs = loop_kwargs(name, s, t, y)
    fn = losses.get(name)
    with pytest.raises(LossConfigError, match=r"labels must have shape \(6,\)"):
        fn(s, t, y[:-1], **kwargs)
    with pytest.raises(LossConfigError, match="labels must be integer"):
        fn(s, t, y.float(), **kwargs)
    with pytest.raises(LossConfigError, match=r"labels must lie in \[0, 7\)"):
        fn(s, t, torch.full_like(y, 7), **kwargs)
    with pytest.raises(LossConfigError, match=r"student_logits must have shape \(B, C\)"):
        fn(s[0], t, y, **kwargs)
    if losses.spec(name).needs_teacher:
        with pytest.raises(LossConfigError, match="teacher_logits must have shape"):
            fn(s, t[:, :-1], y, **kwargs)
        with pytest.raises(LossConfigError, match="needs teacher_logits"):
            fn(s, None, y, **kwargs)
    else:  # teacher-free methods ignore the teacher entirely
        torch.testing.assert_close(fn(s, None, y)["loss"], fn(s, t, y)["loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_loss_on_cuda_matches_cpu():
    s, t, y = batch(dtype=torch.float64)
    for name in ALL:
        kwargs = loop_kwargs(name, s, t, y)
        kwargs.pop("slt_logits", None)
        u = [x * 0.5 for x in (s, t)]  # SL-T logits, when the method has them
        extra = {"slt_logits": u} if losses.spec(name).extra_networks else {}
        cpu = losses.get(name)(s, t, y, **kwargs, **extra)
        gpu_kwargs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        gpu_extra = {k: [x.cuda() for x in v] for k, v in extra.items()}
        gpu = losses.get(name)(s.cuda(), t.cuda(), y.cuda(), **gpu_kwargs, **gpu_extra)
        for key in cpu:
            torch.testing.assert_close(gpu[key].cpu(), cpu[key], rtol=1e-10, atol=1e-10, msg=f"{name}.{key}")
    torch.testing.assert_close(losses.isats_tau_star(t.cuda(), y.cuda()).cpu(), losses.isats_tau_star(t, y))


# FLSW's cosine reads the raw logits; ATS/ISATS divide the teacher's label
# column by a different temperature, so a teacher shift c becomes c/τ1 vs c/τ2.
STUDENT_SHIFT_VARIANT = {"dtd"}
TEACHER_SHIFT_VARIANT = {"dtd", "ats", "isats"}


# Multiples of 1/8: shifting them is exact, so the order of the logits (and
# LA's "is the teacher wrong" decision) cannot change by rounding.
EIGHTHS = st.integers(-160, 160).map(lambda i: i / 8)


@FAST
@given(
    data=hnp.arrays(np.float64, (3, 4, 5), elements=EIGHTHS),
    labels=hnp.arrays(np.int64, 4, elements=st.integers(0, 4)),
    shift=hnp.arrays(np.float64, (2, 4, 1), elements=EIGHTHS.map(lambda v: 5 * v)),
)
def test_property_losses_are_invariant_to_per_row_logit_shifts(data, labels, shift):
    """softmax(v + c) = softmax(v): a per-row constant on either network's logits changes nothing."""
    s, t, u = (torch.tensor(a) for a in data)
    y = torch.tensor(labels)
    ds, dt = torch.tensor(shift[0]), torch.tensor(shift[1])
    for name in ALL:
        kwargs = loop_kwargs(name, s, t, y)
        if "slt_logits" in kwargs:
            kwargs["slt_logits"] = [u, u.flip(0)]
        base = losses.get(name)(s, t, y, **kwargs)
        if "slt_logits" in kwargs:
            kwargs["slt_logits"] = [u + 3.0, u.flip(0) - 5.0]
        moved_s = s if name in STUDENT_SHIFT_VARIANT else s + ds
        moved_t = t if name in TEACHER_SHIFT_VARIANT else t + dt
        moved = losses.get(name)(moved_s, moved_t, y, **kwargs)
        for key in base:
            torch.testing.assert_close(moved[key], base[key], rtol=1e-9, atol=1e-9, msg=f"{name}.{key}")


def test_ats_depends_on_the_teacher_logit_level():
    """Documented behaviour: ATS is not shift-invariant in the teacher (per-class temperatures)."""
    s, t, y = batch(dtype=torch.float64)
    assert not torch.isclose(losses.ats(s, t, y)["kd"], losses.ats(s, t + 10.0, y)["kd"])
    torch.testing.assert_close(losses.ats(s, t, y, tau1=3.0, tau2=3.0)["kd"], losses.ats(s, t + 10.0, y, tau1=3.0, tau2=3.0)["kd"])


# ============================================================================
# 3. Closed forms


def test_kd_between_identical_logits_is_zero():
    s, _, y = batch(dtype=torch.float64)
    for temperature in (1.0, 4.0):
        out = losses.kd(s, s.clone(), y, temperature=temperature)
        assert abs(float(out["kd"])) < 1e-12
        torch.testing.assert_close(out["loss"], 0.1 * out["ce"])
    dkd = losses.dkd(s, s.clone(), y, epoch=30)
    assert abs(float(dkd["tckd"])) < 1e-12 and abs(float(dkd["nckd"])) < 1e-12


def _entropy(t: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p = torch.log_softmax(t / temperature, dim=1)
    return -(log_p.exp() * log_p).sum(1).mean()


@pytest.mark.parametrize("temperature", [1.0, 2.5, 4.0])
def test_ats_with_equal_temperatures_is_kd_in_cross_entropy_form(temperature: float):
    """ATS(τ1=τ2=τs=T) = T²·mean X(σ(t;T), σ(s;T)) = KD(KL form) + T²·mean H(σ(t;T))."""
    s, t, y = hard_rows()
    ats = losses.ats(s, t, y, tau1=temperature, tau2=temperature, student_temperature=temperature, lam=0.3)
    kd = losses.kd(s, t, y, temperature=temperature)
    torch.testing.assert_close(ats["kd"], kd["kd"] + temperature**2 * _entropy(t, temperature), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(ats["loss"], 0.7 * ats["ce"] + 0.3 * ats["kd"])


@pytest.mark.parametrize("student_temperature", [1.0, 4.0])
def test_fgcr_with_alpha_zero_is_ats_at_tau(student_temperature: float):
    s, t, y = hard_rows()
    tt, ty = train_set(t.shape[1])
    table = losses.class_table(tt, ty, t.shape[1], tau0=3.0)
    fgcr = losses.fgcr(s, t, y, tau=4.0, alpha=0.0, student_temperature=student_temperature, class_table=table)
    ats = losses.ats(s, t, y, tau1=4.0, tau2=4.0, student_temperature=student_temperature)
    for key in ("loss", "ce", "kd"):
        torch.testing.assert_close(fgcr[key], ats[key], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("variant", [{"variant": "ps"}, {"variant": "lsr", "epsilon": 0.2}])
def test_la_leaves_rows_where_the_teacher_is_right_unchanged(variant: dict):
    hard, extra = hard_rows(), batch(b=12, c=6, seed=11, dtype=torch.float64)
    s, t, y = (torch.cat([a, b]) for a, b in zip(hard, extra))
    right = [b for b in range(len(y)) if t[b, y[b]] >= t[b].max()]
    wrong = [b for b in range(len(y)) if t[b, y[b]] < t[b].max()]
    assert {2, 6} <= set(right) and len(right) >= 4 and len(wrong) >= 4  # row 6 is a tie: not wrong
    for b in right:
        row = slice(b, b + 1)
        la = losses.la(s[row], t[row], y[row], **variant)
        torch.testing.assert_close(la["loss"], losses.kd(s[row], t[row], y[row])["loss"], rtol=0, atol=0)
        assert float(la["teacher_wrong"]) == 0.0
    for b in wrong:
        row = slice(b, b + 1)
        assert float(losses.la(s[row], t[row], y[row], **variant)["teacher_wrong"]) == 1.0
        assert not torch.isclose(losses.la(s[row], t[row], y[row], **variant)["kd"], losses.kd(s[row], t[row], y[row])["kd"])


def test_la_ps_is_kd_on_the_swapped_teacher():
    s, t, y = hard_rows()
    swapped = t.clone()
    for b in range(len(y)):
        a = int(t[b].argmax())
        if t[b, y[b]] < t[b, a]:
            swapped[b, a], swapped[b, y[b]] = t[b, y[b]], t[b, a]
        assert int(swapped[b].argmax()) == int(y[b]) or swapped[b, y[b]] == swapped[b].max()
    torch.testing.assert_close(losses.la(s, t, y)["loss"], losses.kd(s, swapped, y)["loss"], rtol=1e-12, atol=0)


@pytest.mark.parametrize(("epoch", "factor"), [(1, 0.05), (5, 0.25), (19, 0.95), (20, 1.0), (40, 1.0)])
def test_dkd_warmup_factor(epoch: int, factor: float):
    s, t, y = batch(dtype=torch.float64)
    out = losses.dkd(s, t, y, epoch=epoch, alpha=0.5, beta=3.0)
    assert float(out["warmup_factor"]) == pytest.approx(factor, abs=1e-15)
    torch.testing.assert_close(out["loss"], out["ce"] + factor * (0.5 * out["tckd"] + 3.0 * out["nckd"]))


def test_dkd_needs_a_valid_epoch():
    s, t, y = batch()
    with pytest.raises(LossConfigError, match="needs epoch"):
        losses.dkd(s, t, y)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(LossConfigError, match="epoch must be an integer >= 1"):
            losses.dkd(s, t, y, epoch=bad)


def test_dkd_finite_where_the_reference_code_overflows():
    """Student label 2000 ahead: log of the summed non-target mass is -inf in the code; here finite."""
    s, t, y = hard_rows(torch.float32)
    p, label = torch.softmax(s[7] / 4.0, dim=0), int(y[7])
    assert torch.log(torch.cat([p[:label], p[label + 1 :]]).sum()) == -math.inf  # the code's log β_oth(s)
    out = losses.dkd(s, t, y, epoch=20, temperature=4.0)
    assert torch.isfinite(out["tckd"]) and torch.isfinite(out["loss"])
    s.requires_grad_()
    losses.dkd(s, t, y, epoch=20)["loss"].backward()
    assert torch.isfinite(s.grad).all()


def test_tf_nkd_single_row_weight_is_one():
    s, _, y = batch(b=1, dtype=torch.float64)
    out = losses.tf_nkd(s, None, y)
    torch.testing.assert_close(out["tf"], out["ce"])  # w = S + 1 - mean(S) = 1


def test_regt_uses_the_population_std():
    s, _, y = batch(dtype=torch.float64)
    p = torch.softmax(s, 1).numpy()
    for ddof in (0, 1):
        q = [np.delete(p[b], int(y[b])) for b in range(len(y))]
        reg = np.mean([p[b, int(y[b])] - np.std(q[b], ddof=ddof) for b in range(len(y))])
        out = losses.regt(s, y, beta=0.01, ddof=ddof)
        assert float(out["reg"]) == pytest.approx(reg, rel=1e-12)
        torch.testing.assert_close(out["loss"], out["ce"] + 0.01 * out["reg"])
    assert float(losses.regt(s, y, beta=0.01)["reg"]) != pytest.approx(float(losses.regt(s, y, beta=0.01, ddof=1)["reg"]))


def test_regt_degenerate_rows_have_finite_gradients():
    z = torch.zeros(3, 5, requires_grad=True)  # all non-label probabilities equal: std = 0
    out = losses.regt(z, torch.tensor([0, 1, 4]), beta=0.1)
    out["loss"].backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(LossConfigError, match="beta"):
        losses.regt(z, torch.tensor([0, 1, 4]), beta=-1)
    with pytest.raises(LossConfigError, match="ddof"):
        losses.regt(z, torch.tensor([0, 1, 4]), beta=0.1, ddof=2)


def test_isats_tau_star_is_the_grid_point_of_largest_non_label_variance():
    s, t, y = batch(b=40, c=9, seed=5, dtype=torch.float64, scale=3.0)
    grid = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    tau_star = losses.isats_tau_star(t, y, grid)
    assert tau_star.shape == (40,) and tau_star.dtype == torch.float64
    for b in range(40):
        variances = []
        for tau in grid:
            p = torch.softmax(t[b] / tau, 0).numpy()
            variances.append(np.var(np.delete(p, int(y[b]))))
        assert tau_star[b] == grid[int(np.argmax(variances))]
    assert set(tau_star.tolist()) > {1.0}  # not degenerate: several grid points are chosen


def test_isats_tau_star_ties_take_the_smallest_tau():
    t = torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, -1.0, 0.0, 0.0]])
    assert losses.isats_tau_star(t, torch.tensor([0, 1]), (3.0, 2.0, 6.0))[0] == 2.0  # uniform: all var 0
    two = torch.randn(5, 2)
    assert (losses.isats_tau_star(two, torch.zeros(5, dtype=torch.long)) == 1.0).all()  # C=2: one entry
    # Very confident rows: every non-label probability underflows at every τ (float32 for the
    # first, even float64 for the second), yet the variance is positive and grows with τ.
    rows = torch.tensor([[900.0, 0.0, 1.0, 2.0], [2e4, 0.0, 1.0, 2.0]])
    for dtype in (torch.float32, torch.float64):
        assert losses.isats_tau_star(rows.to(dtype), torch.tensor([0, 0])).tolist() == [8.0, 8.0]


def test_isats_uses_stored_tau_star_or_searches():
    s, t, y = hard_rows()
    tau_star = losses.isats_tau_star(t, y)
    searched = losses.isats(s, t, y)
    stored = losses.isats(s, t, y, tau_star=tau_star)
    torch.testing.assert_close(searched["loss"], stored["loss"], rtol=0, atol=0)
    for b in range(len(y)):  # each single row is ATS at (τ1, τ2) = (τ*_b + 1, τ*_b)
        row = slice(b, b + 1)
        one = losses.isats(s[row], t[row], y[row], tau_star=tau_star[row])
        ref = losses.ats(s[row], t[row], y[row], tau1=float(tau_star[b]) + 1, tau2=float(tau_star[b]))
        torch.testing.assert_close(one["loss"], ref["loss"], rtol=1e-12, atol=0)


def test_isats_rejects_bad_tau_star():
    s, t, y = batch()
    with pytest.raises(LossConfigError, match="must hold temperatures"):
        losses.isats(s, t, y, tau_star=torch.zeros(6, dtype=torch.uint8))
    with pytest.raises(LossConfigError, match="outside grid"):
        losses.isats(s, t, y, tau_star=torch.full((6,), 7.0))
    with pytest.raises(LossConfigError, match=r"shape \(6,\)"):
        losses.isats(s, t, y, tau_star=torch.ones(5))


def test_isats_snaps_stored_tau_star_to_the_grid():
    """A float16/float32 store cannot hold 0.1 exactly; the loss still uses the exact grid value."""
    s, t, y = batch(dtype=torch.float64)
    grid = (0.1, 0.3, 1.0)
    exact = losses.isats_tau_star(t, y, grid)
    stored = exact.to(torch.float16)
    assert not torch.equal(stored.double(), exact)
    torch.testing.assert_close(
        losses.isats(s, t, y, grid=grid, tau_star=stored)["loss"], losses.isats(s, t, y, grid=grid)["loss"], rtol=0, atol=0
    )


def test_class_table_rows_and_errors():
    tt, ty = train_set(5, torch.float32)
    table = losses.class_table(tt, ty, 5, tau0=3.0)
    assert table.shape == (5, 5) and table.dtype == torch.float32
    torch.testing.assert_close(table.sum(1), torch.ones(5))
    torch.testing.assert_close(table[2], torch.softmax(tt[ty == 2].double() / 3.0, 1).mean(0).float())
    with pytest.raises(LossConfigError, match=r"no rows with a hard label: 4"):
        losses.class_table(tt[ty != 4], ty[ty != 4], 5, tau0=3.0)
    with pytest.raises(LossConfigError, match="num_classes is 6"):
        losses.class_table(tt, ty, 6, tau0=3.0)
    with pytest.raises(LossConfigError, match="tau0 must be > 0"):
        losses.class_table(tt, ty, 5, tau0=0.0)


def test_fgcr_rejects_bad_class_tables():
    s, t, y = batch()
    tt, ty = train_set(7, torch.float32)
    sums, counts = losses.class_table_sums(tt, ty, 7, 3.0)
    with pytest.raises(LossConfigError, match="needs class_table"):
        losses.fgcr(s, t, y)
    with pytest.raises(LossConfigError, match=r"class_table must have shape \(7, 7\)"):
        losses.fgcr(s, t, y, class_table=torch.full((6, 6), 1 / 6))
    with pytest.raises(LossConfigError, match="rows must each sum to 1"):
        losses.fgcr(s, t, y, class_table=sums)


@FAST
@given(cuts=st.lists(st.integers(0, 30), max_size=4), seed=st.integers(0, 2**16))
def test_property_class_table_sums_add_up_over_chunks(cuts, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(30, 4, generator=g) * 4
    y = torch.cat([torch.arange(4), torch.randint(0, 4, (26,), generator=g)])
    bounds = [0, *sorted(cuts), 30]
    sums = torch.zeros(4, 4, dtype=torch.float64)
    counts = torch.zeros(4, dtype=torch.long)
    for lo, hi in zip(bounds, bounds[1:]):
        part_sums, part_counts = losses.class_table_sums(t[lo:hi], y[lo:hi], 4, tau0=2.0)
        assert part_sums.dtype == torch.float64 and part_counts.dtype == torch.int64
        sums, counts = sums + part_sums, counts + part_counts
    whole = losses.class_table(t, y, 4, tau0=2.0).double()
    torch.testing.assert_close(losses.class_table_from_sums(sums, counts), whole, rtol=1e-6, atol=1e-7)


@FAST
@given(data=hnp.arrays(np.float64, (2, 3, 6), elements=st.floats(-30, 30)), labels=hnp.arrays(np.int64, 3, elements=st.integers(0, 5)))
def test_property_divergences_are_non_negative(data, labels):
    s, t = torch.tensor(data[0]), torch.tensor(data[1])
    y = torch.tensor(labels)
    assert float(losses.kd(s, t, y)["kd"]) >= -1e-9
    dkd = losses.dkd(s, t, y, epoch=1)
    assert float(dkd["tckd"]) >= -1e-9 and float(dkd["nckd"]) >= -1e-9
    assert float(losses.la(s, t, y)["kd"]) >= -1e-9
    # X-form terms are bounded below by the target's entropy, so by KL >= 0 they exceed it.
    ats = losses.ats(s, t, y, tau1=2.0, tau2=2.0, student_temperature=2.0)
    assert float(ats["kd"]) >= 4.0 * float(_entropy(t, 2.0)) - 1e-9


def test_dtd_temperatures_and_guard():
    s, t, y = batch(b=16, c=100, seed=2, dtype=torch.float64)
    out = losses.dtd(s, t, y, variant="cwsm")
    assert 0 < float(out["tau_min"]) <= 4.0 <= float(out["tau_max"])
    # CWSM weights run from ~1 (confident rows) to ~C (flat rows): with β=1, flat rows go negative.
    mixed = torch.cat([torch.zeros(8, 100, dtype=torch.float64), s[8:] * 20])
    with pytest.raises(LossConfigError, match=r"reached .* ≤ 0.*beta ≲ base_temperature / C = 0.04"):
        losses.dtd(mixed, t, y, variant="cwsm", beta=1.0)
    same = losses.dtd(s, t, y, gamma=0.0)  # w = 1 everywhere: τ_b = T0
    assert float(same["tau_min"]) == float(same["tau_max"]) == 4.0
    plain = losses.dtd(s, t, y, gamma=0.0, scale="tau_sq")
    torch.testing.assert_close(plain["kd"], 16 * same["kd"])


def test_slkd_fused_target_gradient_follows_detach_option():
    s, t, y = batch(dtype=torch.float64)
    grads = {}
    for detach in (False, True):
        u = [torch.randn(6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(k)).requires_grad_() for k in (1, 2)]
        out = losses.slkd(s, t, y, slt_logits=u, detach_fused_slt=detach)
        out["loss"].backward()
        grads[detach] = u[0].grad.clone()
        u_alone = [x.detach().clone().requires_grad_() for x in u]
        own = losses.slkd(s, t, y, slt_logits=u_alone)
        (0.1 * own["slt_ce"] + 0.9 * own["slt_kd"]).backward()
        if detach:  # SL-Ts learn from the teacher and the label only
            torch.testing.assert_close(grads[True], u_alone[0].grad)
    assert not torch.allclose(grads[False], grads[True])  # the code's default: pulled toward the student
    with pytest.raises(LossConfigError, match="needs slt_logits"):
        losses.slkd(s, t, y, slt_logits=[s])


# ============================================================================
# 4. Independent float64 references, straight from the formulas of docs/methods.md
# (numpy, row by row; nothing shared with the library).


def r_log_softmax(v: np.ndarray, temperature: Any = 1.0) -> np.ndarray:
    z = np.asarray(v, dtype=np.float64) / temperature
    m = z.max()
    return z - m - np.log(np.sum(np.exp(z - m)))


def r_lse(v: np.ndarray) -> float:
    m = v.max()
    return float(m + np.log(np.sum(np.exp(v - m))))


def r_kl(log_p: np.ndarray, log_q: np.ndarray) -> float:
    p = np.exp(log_p)  # an underflowed p is an exact 0 times a finite log: 0·log 0 = 0
    return float(np.sum(p * (log_p - log_q)))


def r_kl_prob(p: np.ndarray, log_q: np.ndarray) -> float:
    safe = np.where(p > 0, p, 1.0)
    return float(np.sum(np.where(p > 0, p * np.log(safe), 0.0) - p * log_q))


def r_x(p: np.ndarray, log_q: np.ndarray) -> float:
    return float(-np.sum(p * log_q))


def r_ce(s: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([-r_log_softmax(s[b])[y[b]] for b in range(len(y))]))


def ref_kd(s, t, y, temperature=4.0, ce_weight=0.1, kd_weight=0.9):
    T = temperature
    kd = T**2 * np.mean([r_kl(r_log_softmax(t[b], T), r_log_softmax(s[b], T)) for b in range(len(y))])
    ce = r_ce(s, y)
    return {"loss": ce_weight * ce + kd_weight * kd, "ce": ce, "kd": kd}


def ref_dkd(s, t, y, alpha=1.0, beta=8.0, temperature=4.0, warmup=20.0, ce_weight=1.0, epoch=5):
    T, tckd, nckd = temperature, [], []
    for b in range(len(y)):
        zs, zt = s[b] / T, t[b] / T
        ns, nt = np.delete(zs, y[b]), np.delete(zt, y[b])
        log_bs = np.array([zs[y[b]] - r_lse(zs), r_lse(ns) - r_lse(zs)])
        log_bt = np.array([zt[y[b]] - r_lse(zt), r_lse(nt) - r_lse(zt)])
        tckd.append(r_kl(log_bt, log_bs))
        nckd.append(r_kl(r_log_softmax(nt), r_log_softmax(ns)))
    tckd, nckd = T**2 * np.mean(tckd), T**2 * np.mean(nckd)
    factor = min(epoch / warmup, 1.0)
    ce = r_ce(s, y)
    return {"loss": ce_weight * ce + factor * (alpha * tckd + beta * nckd), "ce": ce, "tckd": tckd, "nckd": nckd, "warmup_factor": factor}


def ref_nkd(s, t, y, gamma=3.5, temperature=3.0):
    T, soft, dist = temperature, [], []
    for b in range(len(y)):
        soft.append(-np.exp(r_log_softmax(t[b])[y[b]]) * r_log_softmax(s[b])[y[b]])
        p = np.exp(r_log_softmax(np.delete(t[b], y[b]), T))
        dist.append(r_x(p, r_log_softmax(np.delete(s[b], y[b]), T)))
    ce = r_ce(s, y)
    soft, dist = float(np.mean(soft)), T**2 * float(np.mean(dist))
    return {"loss": ce + soft + gamma * dist, "ce": ce, "soft": soft, "distributed": dist}


def ref_tf_nkd(s, t, y):
    log_s = np.array([r_log_softmax(s[b])[y[b]] for b in range(len(y))])
    w = np.exp(log_s) + 1.0 - np.exp(log_s).mean()
    ce = r_ce(s, y)
    tf = float(-np.mean(w * log_s))
    return {"loss": ce + tf, "ce": ce, "tf": tf}


def ref_la(s, t, y, temperature=4.0, ce_weight=0.1, kd_weight=0.9, variant="ps", epsilon=None):
    T, rows, wrong = temperature, [], 0
    c = t.shape[1]
    for b in range(len(y)):
        row = t[b].copy()
        a = int(np.argmax(row))
        is_wrong = row[y[b]] < row[a]
        wrong += is_wrong
        log_q = r_log_softmax(s[b], T)
        if variant == "lsr" and is_wrong:
            target = np.full(c, epsilon / c)
            target[y[b]] += 1 - epsilon
            rows.append(r_kl_prob(target, log_q))
            continue
        if is_wrong:
            row[a], row[y[b]] = row[y[b]], row[a]
        rows.append(r_kl(r_log_softmax(row, T), log_q))
    ce, kd = r_ce(s, y), T**2 * float(np.mean(rows))
    return {"loss": ce_weight * ce + kd_weight * kd, "ce": ce, "kd": kd, "teacher_wrong": wrong / len(y)}


def ref_dtd(s, t, y, variant="flsw", base_temperature=4.0, beta=None, gamma=2.0, scale="none", ce_weight=1.0):
    beta = {"flsw": 1.0, "cwsm": 0.05}[variant] if beta is None else beta
    if variant == "flsw":
        cos = [np.dot(s[b] / (np.linalg.norm(s[b]) + 1e-4), t[b] / (np.linalg.norm(t[b]) + 1e-4)) for b in range(len(y))]
        w = np.maximum(1 - np.array(cos), 0) ** gamma
    else:
        w = np.array([1 / (np.exp(r_log_softmax(s[b])).max() + 1e-3) for b in range(len(y))])
    tau = base_temperature + beta * (w.mean() - w)
    rows = [r_x(np.exp(r_log_softmax(t[b], tau[b])), r_log_softmax(s[b], tau[b])) for b in range(len(y))]
    if scale == "tau_sq":
        rows = [r * tau[b] ** 2 for b, r in enumerate(rows)]
    ce, kd = r_ce(s, y), float(np.mean(rows))
    return {"loss": ce_weight * ce + kd, "ce": ce, "kd": kd, "tau_min": tau.min(), "tau_max": tau.max()}


def ref_ats_rows(s, t, y, tau1, tau2, student_temperature):
    """τs²·X(σ(t_b; τ_b), σ(s_b; τs)) per row; tau1/tau2 per row."""
    rows = []
    for b in range(len(y)):
        taus = np.full(t.shape[1], float(tau2[b]))
        taus[y[b]] = tau1[b]
        rows.append(student_temperature**2 * r_x(np.exp(r_log_softmax(t[b], taus)), r_log_softmax(s[b], student_temperature)))
    return rows


def ref_ats(s, t, y, tau1=4.0, tau2=3.0, student_temperature=1.0, lam=0.5):
    n = len(y)
    kd = float(np.mean(ref_ats_rows(s, t, y, [tau1] * n, [tau2] * n, student_temperature)))
    ce = r_ce(s, y)
    return {"loss": (1 - lam) * ce + lam * kd, "ce": ce, "kd": kd}


def ref_tau_star(t, y, grid=(1, 2, 3, 4, 5, 6, 8)):
    grid = sorted(grid)
    out = []
    for b in range(len(y)):
        variances = [np.var(np.delete(np.exp(r_log_softmax(t[b], tau)), y[b])) for tau in grid]
        out.append(float(grid[int(np.argmax(variances))]))  # np.argmax: first maximum
    return np.array(out)


def ref_isats(s, t, y, grid=(1, 2, 3, 4, 5, 6, 8), student_temperature=1.0, lam=0.5, tau_star=None):
    tau_star = ref_tau_star(t, y, grid) if tau_star is None else tau_star
    kd = float(np.mean(ref_ats_rows(s, t, y, tau_star + 1, tau_star, student_temperature)))
    ce = r_ce(s, y)
    return {"loss": (1 - lam) * ce + lam * kd, "ce": ce, "kd": kd}


def ref_class_table(t, y, c, tau0):
    return np.stack([np.mean([np.exp(r_log_softmax(t[i], tau0)) for i in range(len(y)) if y[i] == k], axis=0) for k in range(c)])


def ref_fgcr(s, t, y, tau=4.0, alpha=0.5, student_temperature=1.0, lam=0.5, tau0=None, class_table=None):
    ts = student_temperature
    rows = [
        ts**2 * r_x((1 - alpha) * np.exp(r_log_softmax(t[b], tau)) + alpha * class_table[y[b]], r_log_softmax(s[b], ts))
        for b in range(len(y))
    ]
    ce, kd = r_ce(s, y), float(np.mean(rows))
    return {"loss": (1 - lam) * ce + lam * kd, "ce": ce, "kd": kd}


def ref_slkd(s, t, y, temperature=4.0, a=0.1, b=0.9, p=1.0, a_cs=1.0, b_cs=1.0, detach_fused_slt=False, slt_logits=None):
    u1, u2 = slt_logits

    def kd_t(student, target):
        return temperature**2 * np.mean([r_kl(r_log_softmax(target[i], temperature), r_log_softmax(student[i], temperature)) for i in range(len(y))])

    ce, kd = r_ce(s, y), kd_t(s, t)
    slt_ce, slt_kd = r_ce(u1, y) + r_ce(u2, y), kd_t(u1, t) + kd_t(u2, t)
    cs_kd = kd_t(s, 0.5 * u1 + 0.5 * u2)
    loss = a * ce + b * kd + a * slt_ce + b * slt_kd + p * (a_cs * ce + b_cs * cs_kd)
    return {"loss": loss, "ce": ce, "kd": kd, "slt_ce": slt_ce, "slt_kd": slt_kd, "cs_kd": cs_kd}


REFERENCE_CASES = [
    ("ce", {}),
    ("kd", {}),
    ("kd", {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5}),
    ("dkd", {"epoch": 5}),
    ("dkd", {"epoch": 1, "temperature": 1.0, "beta": 0.5, "warmup": 1.0}),
    ("nkd", {}),
    ("nkd", {"gamma": 1.5, "temperature": 1.0}),
    ("tf_nkd", {}),
    ("la", {}),
    ("la", {"temperature": 2.0, "variant": "lsr", "epsilon": 0.1}),
    ("la", {"variant": "lsr", "epsilon": 0.0}),
    ("dtd", {}),
    ("dtd", {"scale": "tau_sq", "gamma": 1.5}),
    ("dtd", {"variant": "cwsm"}),
    ("dtd", {"variant": "cwsm", "beta": 0.3, "scale": "tau_sq"}),
    ("ats", {}),
    ("ats", {"tau1": 6.0, "tau2": 1.0, "student_temperature": 2.0, "lam": 0.8}),
    ("isats", {}),
    ("isats", {"grid": (0.5, 1.5, 3.0), "student_temperature": 2.0, "lam": 0.25}),
    ("fgcr", {}),
    ("fgcr", {"tau": 2.0, "alpha": 0.1, "student_temperature": 2.0, "tau0": 1.0}),
    ("slkd", {}),
    ("slkd", {"temperature": 1.0, "a": 0.5, "b": 0.5, "p": 0.7, "a_cs": 0.3, "b_cs": 2.0}),
]
REFERENCES = {
    "ce": lambda s, t, y: {"loss": r_ce(s, y), "ce": r_ce(s, y)},
    "kd": ref_kd,
    "dkd": ref_dkd,
    "nkd": ref_nkd,
    "tf_nkd": ref_tf_nkd,
    "la": ref_la,
    "dtd": ref_dtd,
    "ats": ref_ats,
    "isats": ref_isats,
    "fgcr": ref_fgcr,
    "slkd": ref_slkd,
}


@pytest.mark.parametrize(("name", "hparams"), REFERENCE_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(REFERENCE_CASES)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_independent_float64_reference(name: str, hparams: dict, dtype: torch.dtype):
    s, t, y = hard_rows(dtype)
    # The reference sees exactly the values the library sees (after any float32 rounding).
    s_np, t_np, y_np = s.double().numpy(), t.double().numpy(), y.numpy()
    lib_kwargs, ref_kwargs = dict(hparams), dict(hparams)
    if name == "fgcr":
        tt, ty = train_set(t.shape[1])
        tau0 = losses.spec("fgcr").resolve(hparams)["tau0"]
        table = ref_class_table(tt.numpy(), ty.numpy(), t.shape[1], tau0)
        torch.testing.assert_close(losses.class_table(tt, ty, t.shape[1], tau0), torch.tensor(table), rtol=1e-12, atol=1e-15)
        lib_kwargs["class_table"], ref_kwargs["class_table"] = torch.tensor(table, dtype=dtype), table
    if name == "slkd":
        rng = np.random.default_rng(3)
        u = [torch.tensor(rng.normal(0, 2, t.shape)).to(dtype) for _ in range(2)]
        lib_kwargs["slt_logits"], ref_kwargs["slt_logits"] = u, [x.double().numpy() for x in u]
    if name == "isats":
        grid = hparams.get("grid", losses.ISATS_GRID)
        tau_star = ref_tau_star(t_np, y_np, grid)
        torch.testing.assert_close(losses.isats_tau_star(t, y, grid), torch.tensor(tau_star, dtype=dtype), rtol=0, atol=0)
        assert tau_star[2] == max(grid) and tau_star[3] == min(grid)  # confident right / confident wrong rows
    expected = REFERENCES[name](s_np, t_np, y_np, **ref_kwargs)
    got = losses.get(name)(s, t, y, **lib_kwargs)
    assert set(expected) <= set(got)
    rtol, atol = (1e-10, 1e-10) if dtype == torch.float64 else (2e-5, 1e-5)
    for key, value in expected.items():
        assert math.isfinite(value), (key, value)
        assert float(got[key]) == pytest.approx(value, rel=rtol, abs=atol), f"{name}.{key}"


@pytest.mark.parametrize("ddof", [0, 1])
def test_regt_matches_reference_on_hard_rows(ddof: int):
    s, _, y = hard_rows()
    s_np, y_np = s.numpy(), y.numpy()
    reg = np.mean([np.exp(r_log_softmax(s_np[b]))[y_np[b]] - np.std(np.delete(np.exp(r_log_softmax(s_np[b])), y_np[b]), ddof=ddof) for b in range(len(y_np))])
    out = losses.regt(s, y, beta=0.001, ddof=ddof)
    assert float(out["reg"]) == pytest.approx(reg, rel=1e-10, abs=1e-12)
    assert float(out["loss"]) == pytest.approx(r_ce(s_np, y_np) + 0.001 * reg, rel=1e-10)


# ============================================================================
# 5. Golden values


GOLDEN = json.loads((DATA / "golden_losses.json").read_text())


def test_golden_file_is_current_with_its_generator():
    assert [(c["loss"], c["hparams"], c["call"]) for c in GOLDEN["cases"]] == [
        (n, hp, call) for n, hp, call in golden_maker.CASES
    ], "tests/data/golden_losses.json is stale: run python tests/data/make_golden_losses.py"
    assert {c["loss"] for c in GOLDEN["cases"]} == set(ALL)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_golden_values(dtype: torch.dtype, rtol: float):
    got = golden_maker.compute(GOLDEN["inputs"], dtype)
    for case, values in zip(GOLDEN["cases"], got["cases"]):
        assert set(values) == set(case["expected"]), case["loss"]
        for key, value in case["expected"].items():
            assert values[key] == pytest.approx(value, rel=rtol, abs=rtol), f"{case['loss']} {case['hparams']} {key}"
    for case, values in zip(GOLDEN["regt"], got["regt"]):
        for key, value in case["expected"].items():
            assert values[key] == pytest.approx(value, rel=rtol, abs=rtol), f"regt {key}"
    assert got["tau_star"] == GOLDEN["tau_star"]["expected"]
    np.testing.assert_allclose(got["class_table"], GOLDEN["class_table"]["expected"], rtol=rtol, atol=rtol)

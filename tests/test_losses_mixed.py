"""Losses and statistics on mixed (mixup/cutmix) views: docs/methods.md, "Mixed views".

Each rule is checked against a reference written here with numpy and loops,
from the formulas in the docs (never through kdcache's helpers); λ = 1 must
give the unmixed loss bit for bit, λ = 0 the loss with the partner's label.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcache import losses
from kdcache.errors import LossConfigError
from kdcache.losses import MixedLabels, as_mixed, mixed_cross_entropy, require_mixed_rule
from kdcache.stats.providers import _AccuracyAcc, _TableAcc

B, C = 9, 6


def make(seed: int = 0, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, C, generator=g, dtype=torch.float64) * scale
    t = torch.randn(B, C, generator=g, dtype=torch.float64) * scale * 1.5
    y = torch.randint(0, C, (B,), generator=g)
    p = torch.randint(0, C, (B,), generator=g)
    p[0] = y[0]  # a partner of the view's own class
    lam = torch.rand(B, generator=g, dtype=torch.float64).float()
    lam[1], lam[2], lam[3] = 1.0, 0.0, 0.5  # unmixed, all partner, a tie
    t[4, p[4]] = t[4].max() + 5.0  # teacher ranks the partner first
    return s, t, MixedLabels(y, p, lam)


def table(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return losses.class_table(torch.randn(60, C, generator=g, dtype=torch.float64), torch.arange(60) % C, C, 3.0)


def slts(seed: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, C, generator=g, dtype=torch.float64) for _ in range(2)]


EXTRA = {"dkd": lambda: {"epoch": 30}, "fgcr": lambda: {"class_table": table()}, "slkd": lambda: {"slt_logits": slts()}}
CASES = [(n, r) for n in losses.names() for r in (losses.spec(n).mixed_rules or (None,))]


def call(name, s, t, labels, rule, **hp):
    kw = {**EXTRA.get(name, dict)(), **hp}
    if rule is not None:
        kw["mixed"] = rule
    return losses.spec(name).fn(s, t, labels, **kw)


# ---------------------------------------------------------------------------- numpy references


def lsm(v: np.ndarray) -> np.ndarray:
    m = v.max()
    return v - m - np.log(np.exp(v - m).sum())


def np_rows(labels: MixedLabels):
    return labels.label.numpy(), labels.partner.numpy(), labels.lam.double().numpy()


def ref_ce(s, labels):
    y, p, lam = np_rows(labels)
    s = s.detach().numpy()
    return np.mean([-(lam[b] * lsm(s[b])[y[b]] + (1 - lam[b]) * lsm(s[b])[p[b]]) for b in range(B)])


def dominant_np(labels):
    y, p, lam = np_rows(labels)
    return np.array([y[b] if lam[b] >= 0.5 else p[b] for b in range(B)])


def mix_per_row(labels, rule, row_fn):
    """mean_b of the rule applied to a per-row term row_fn(b, class)."""
    y, p, lam = np_rows(labels)
    dom = dominant_np(labels)
    out = []
    for b in range(B):
        if rule == "dominant":
            out.append(row_fn(b, dom[b]))
        else:
            out.append(lam[b] * row_fn(b, y[b]) + (1 - lam[b]) * row_fn(b, p[b]))
    return float(np.mean(out))


def kl(pl, ql):
    return float(np.sum(np.exp(pl) * (pl - ql)))


def ref_dkd(s, t, labels, rule, T=4.0, alpha=1.0, beta=8.0):
    s, t = s.detach().numpy(), t.numpy()

    def tckd(b, c):
        ls, lt = lsm(s[b] / T), lsm(t[b] / T)
        bs = np.log([np.exp(ls[c]), 1 - np.exp(ls[c])])
        bt = np.log([np.exp(lt[c]), 1 - np.exp(lt[c])])
        return kl(bt, bs)

    def nckd(b, c):
        keep = [k for k in range(C) if k != c]
        return kl(lsm(t[b, keep] / T), lsm(s[b, keep] / T))

    return T**2 * (alpha * mix_per_row(labels, rule, tckd) + beta * mix_per_row(labels, rule, nckd))


def ref_nkd(s, t, labels, rule, gamma=3.5, T=3.0):
    s, t = s.detach().numpy(), t.numpy()

    def soft(b, c):
        return -np.exp(lsm(t[b])[c]) * lsm(s[b])[c]

    def dist(b, c):
        keep = [k for k in range(C) if k != c]
        pt = np.exp(lsm(t[b, keep] / T))
        return -np.sum(pt * lsm(s[b, keep] / T))

    return mix_per_row(labels, rule, soft) + gamma * T**2 * mix_per_row(labels, rule, dist)


def ref_tf_nkd(s, labels):
    """The authors' code on the soft label: sort it, one term per top-2 entry, zero weight where 0."""
    y, p, lam = np_rows(labels)
    s = s.detach().numpy()
    soft = np.zeros((B, C))
    for b in range(B):
        soft[b, y[b]] += lam[b]
        soft[b, p[b]] += 1 - lam[b]
    total = 0.0
    for k in range(2):
        # The k-th largest entry; at a tie the view's own label comes first.
        cls = np.array([sorted(range(C), key=lambda c: (-soft[b, c], c != y[b]))[k] for b in range(B)])
        val = soft[np.arange(B), cls]
        prob = np.array([np.exp(lsm(s[b])[cls[b]]) for b in range(B)])
        present = val > 0  # a row with one entry has no second one: it is left out of that mean
        w = prob + val - (prob.mean() if k == 0 else prob[present].mean() if present.any() else 0.0)
        w[~present] = 0
        total += -np.mean(w * np.log(prob))
    return total


def ref_ats_rows(s, t, b, c, tau_label, tau_other, ts=1.0):
    taus = np.full(C, tau_other)
    taus[c] = tau_label
    pl = lsm(t[b] / taus)
    return -np.sum(np.exp(pl) * lsm(s[b] / ts))


def ref_tau_star(t_row, c, grid=(1, 2, 3, 4, 5, 6, 8)):
    best, arg = -1.0, None
    for tau in grid:
        q = np.exp(lsm(t_row / tau))
        var = np.var(np.delete(q, c))
        if var > best:
            best, arg = var, tau
    return float(arg)


# ---------------------------------------------------------------------------- rules vs references


def test_mixed_ce_is_timm_soft_target_ce():
    s, t, m = make()
    target = np.zeros((B, C))
    for b in range(B):
        target[b, m.label[b]] += float(m.lam[b])
        target[b, m.partner[b]] += 1 - float(m.lam[b])
    timm = np.mean([-np.sum(target[b] * lsm(s[b].numpy())) for b in range(B)])
    assert float(mixed_cross_entropy(s, m)) == pytest.approx(timm, rel=1e-12)
    assert np.allclose(m.soft_target(C, torch.float64).numpy(), target)
    for name in losses.names():
        rule = (losses.spec(name).mixed_rules or (None,))[0]
        assert float(call(name, s, t, m, rule)["ce"]) == pytest.approx(ref_ce(s, m), rel=1e-12), name


def test_label_free_methods_keep_their_teacher_terms():
    s, t, m = make()
    for name, keys in {"kd": ["kd"], "dtd": ["kd", "tau_min"], "slkd": ["kd", "slt_kd", "cs_kd"]}.items():
        plain, mixed = call(name, s, t, m.label, None), call(name, s, t, m, None)
        for k in keys:
            assert torch.equal(plain[k], mixed[k]), (name, k)
    u = slts()
    assert float(call("slkd", s, t, m, None)["slt_ce"]) == pytest.approx(ref_ce(u[0], m) + ref_ce(u[1], m), rel=1e-12)
    out = call("kd", s, t, m, None)
    assert float(out["loss"]) == pytest.approx(0.1 * ref_ce(s, m) + 0.9 * float(out["kd"]), rel=1e-12)


@pytest.mark.parametrize("rule", ["dominant", "both"])
def test_dkd(rule):
    s, t, m = make()
    out = call("dkd", s, t, m, rule)
    assert float(out["loss"]) == pytest.approx(ref_ce(s, m) + ref_dkd(s, t, m, rule), rel=1e-10)


@pytest.mark.parametrize("rule", ["dominant", "both"])
def test_nkd(rule):
    s, t, m = make()
    out = call("nkd", s, t, m, rule)
    assert float(out["loss"]) == pytest.approx(ref_ce(s, m) + ref_nkd(s, t, m, rule), rel=1e-10)
    assert losses.spec("nkd").mixed_default == "dominant"  # the authors' argmax of the soft label


def test_tf_nkd_follows_the_authors_two_target_code():
    s, t, m = make()
    out = call("tf_nkd", s, None, m, None)
    assert float(out["tf"]) == pytest.approx(ref_tf_nkd(s, m), rel=1e-10)
    assert float(out["loss"]) == pytest.approx(ref_ce(s, m) + ref_tf_nkd(s, m), rel=1e-10)


@pytest.mark.parametrize("variant", ["ps", "lsr"])
def test_la_dominant(variant):
    s, t, m = make()
    hp = {"epsilon": 0.2} if variant == "lsr" else {}
    out = call("la", s, t, m, "dominant", variant=variant, **hp)
    sn, tn, dom, T = s.numpy(), t.numpy(), dominant_np(m), 4.0
    rows = []
    for b in range(B):
        c, a = dom[b], int(np.argmax(tn[b]))
        if tn[b, c] < tn[b, a]:
            if variant == "ps":
                adj = tn[b].copy()
                adj[c], adj[a] = tn[b, a], tn[b, c]
                target = np.exp(lsm(adj / T))
            else:
                target = np.full(C, 0.2 / C)
                target[c] += 0.8
        else:
            target = np.exp(lsm(tn[b] / T))
        rows.append(np.sum(target * (np.log(target) - lsm(sn[b] / T))))
    assert float(out["loss"]) == pytest.approx(0.1 * ref_ce(s, m) + 0.9 * T**2 * np.mean(rows), rel=1e-10)


@pytest.mark.parametrize("rule", ["dominant", "both"])
def test_ats(rule):
    s, t, m = make()
    out = call("ats", s, t, m, rule)
    kd = mix_per_row(m, rule, lambda b, c: ref_ats_rows(s.numpy(), t.numpy(), b, c, 4.0, 3.0))
    assert float(out["loss"]) == pytest.approx(0.5 * ref_ce(s, m) + 0.5 * kd, rel=1e-10)


@pytest.mark.parametrize("rule", ["dominant", "both"])
def test_isats_searched_and_stored(rule):
    s, t, m = make()
    tn = t.numpy()

    def row(b, c):
        tau = ref_tau_star(tn[b], c)
        return ref_ats_rows(s.numpy(), tn, b, c, tau + 1.0, tau)

    expected = 0.5 * ref_ce(s, m) + 0.5 * mix_per_row(m, rule, row)
    assert float(call("isats", s, t, m, rule)["loss"]) == pytest.approx(expected, rel=1e-10)
    stored = losses.isats_tau_star(t, m).float()  # the statistic, as a float32 store keeps it
    assert float(call("isats", s, t, m, rule, tau_star=stored)["loss"]) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(LossConfigError, match=r"shape \(9, 2\)"):
        call("isats", s, t, m, rule, tau_star=stored[:, 0])


@pytest.mark.parametrize("rule", ["both", "dominant"])
def test_fgcr(rule):
    s, t, m = make()
    tab, (y, p, lam), dom = table().numpy(), np_rows(m), dominant_np(m)
    rows = []
    for b in range(B):
        prior = tab[dom[b]] if rule == "dominant" else lam[b] * tab[y[b]] + (1 - lam[b]) * tab[p[b]]
        target = 0.5 * np.exp(lsm(t.numpy()[b] / 4.0)) + 0.5 * prior
        rows.append(-np.sum(target * lsm(s.numpy()[b])))
    out = call("fgcr", s, t, m, rule)
    assert float(out["loss"]) == pytest.approx(0.5 * ref_ce(s, m) + 0.5 * np.mean(rows), rel=1e-10)
    if rule == "both":  # the default: X is linear in the target
        assert torch.equal(call("fgcr", s, t, m, None)["loss"], out["loss"])


# ---------------------------------------------------------------------------- edges of λ


@pytest.mark.parametrize(("name", "rule"), CASES)
def test_lam_one_is_the_unmixed_loss_bit_for_bit(name, rule):
    s, t, m = make()
    plain = call(name, s, t, m.label, rule)
    one = call(name, s, t, as_mixed(m.label), rule)
    # A partner of another class with λ = 1 too: its terms must vanish exactly.
    other = call(name, s, t, MixedLabels(m.label, (m.label + 1) % C, torch.ones(B)), rule)
    for key in plain:
        assert torch.equal(plain[key], one[key]), key
        assert torch.equal(plain[key], other[key]), key


@pytest.mark.parametrize(("name", "rule"), CASES)
def test_lam_zero_is_the_partner_loss(name, rule):
    s, t, m = make()
    partner_plain = call(name, s, t, m.partner, rule)
    zero = call(name, s, t, MixedLabels(m.label, m.partner, torch.zeros(B)), rule)
    for key in partner_plain:
        assert torch.equal(partner_plain[key], zero[key]), key


@pytest.mark.parametrize(("name", "rule"), CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_gradients_finite_on_large_logits(name, rule, dtype):
    s, t, m = make(seed=3, scale=3000.0)
    s = s.to(dtype).requires_grad_(True)
    extra = {"slt_logits": [x.to(dtype).requires_grad_(True) for x in slts()]} if name == "slkd" else {}
    out = call(name, s, t.to(dtype), m, rule, **extra)
    assert all(bool(torch.isfinite(v).all()) for v in out.values()), name
    out["loss"].backward()
    assert s.grad is not None and bool(torch.isfinite(s.grad).all())


# ---------------------------------------------------------------------------- refusals and options


@pytest.mark.parametrize("name", ["dkd", "la", "ats", "isats"])
def test_methods_without_a_settled_rule_refuse_in_one_line(name):
    s, t, m = make()
    with pytest.raises(LossConfigError) as info:
        call(name, s, t, m, None)
    msg = str(info.value)
    assert "\n" not in msg and "mixed=dominant" in msg and name in msg
    with pytest.raises(LossConfigError, match="mixed=dominant"):
        require_mixed_rule(losses.spec(name))
    # Even mixed labels that happen to be unmixed: the store's views are mixed, so the choice is needed.
    with pytest.raises(LossConfigError, match="mixed="):
        call(name, s, t, as_mixed(m.label), None)
    assert require_mixed_rule(losses.spec(name), {"mixed": "dominant"}) == "dominant"


def test_mixed_option_resolution():
    assert "mixed" not in losses.spec("dkd").resolve()  # defaults and run records unchanged
    assert losses.spec("dkd").resolve({"mixed": "both"})["mixed"] == "both"
    assert losses.spec("dkd").config({"mixed": "both"})["configuration"]["mixed"] == "both"
    with pytest.raises(LossConfigError, match="mixed must be one of dominant"):
        losses.spec("la").resolve({"mixed": "both"})
    with pytest.raises(LossConfigError, match="no hyper-parameter 'mixed'"):
        losses.spec("kd").resolve({"mixed": "both"})  # one rule only: nothing to choose
    assert require_mixed_rule(losses.spec("kd")) is None
    assert require_mixed_rule(losses.spec("nkd")) == "dominant"
    assert require_mixed_rule(losses.spec("fgcr")) == "both"


def test_bad_mixed_labels_are_one_line_errors():
    s, t, m = make()
    for bad, match in [
        (MixedLabels(m.label, m.partner, m.lam * 2), r"lam in \[0, 1\]"),
        (MixedLabels(m.label, m.partner, m.lam[:3]), r"floating \(9,\) tensor"),
        (MixedLabels(m.label, m.partner + C, m.lam), "partner"),
    ]:
        with pytest.raises(LossConfigError, match=match):
            losses.kd(s, t, bad)


# ---------------------------------------------------------------------------- statistics


def test_tau_star_of_mixed_rows_is_searched_with_each_label():
    _, t, m = make()
    got = losses.isats_tau_star(t, m)
    for b in range(B):
        assert float(got[b, 0]) == ref_tau_star(t.numpy()[b], int(m.label[b]))
        assert float(got[b, 1]) == ref_tau_star(t.numpy()[b], int(m.partner[b]))
    assert torch.equal(losses.isats_tau_star(t, as_mixed(m.label))[:, 0], losses.isats_tau_star(t, m.label))


def test_class_table_counts_lam_toward_each_class():
    _, t, m = make()
    (y, p, lam), tn = np_rows(m), t.numpy()
    sums, weights = np.zeros((C, C)), np.zeros(C)
    for b in range(B):
        prob = np.exp(lsm(tn[b] / 3.0))
        sums[y[b]] += lam[b] * prob
        sums[p[b]] += (1 - lam[b]) * prob
        weights[y[b]] += lam[b]
        weights[p[b]] += 1 - lam[b]
    got_sums, got_weights = losses.class_table_sums(t, m, C, 3.0)
    assert np.allclose(got_sums.numpy(), sums, rtol=1e-12) and np.allclose(got_weights.numpy(), weights, rtol=1e-12)
    # Unmixed rows as MixedLabels give exactly the plain sums and counts.
    plain_sums, plain_counts = losses.class_table_sums(t, m.label, C, 3.0)
    mixed_sums, mixed_weights = losses.class_table_sums(t, as_mixed(m.label), C, 3.0)
    assert torch.equal(plain_sums, mixed_sums) and torch.equal(plain_counts.double(), mixed_weights)


def test_stats_accumulators_take_mixed_labels():
    _, t, m = make()
    acc = _TableAcc([3.0], C)
    whole = torch.cat([t] * 4)
    labels = MixedLabels(torch.arange(4 * B) % C, torch.roll(torch.arange(4 * B) % C, 1), torch.full((4 * B,), 0.75))
    acc.update(0, 0, whole, labels)
    sums, weights = losses.class_table_sums(whole, labels, C, 3.0)
    assert np.array_equal(acc.sums[0], sums.numpy()) and np.array_equal(acc.counts, weights.numpy())
    accuracy = _AccuracyAcc(1, B)
    accuracy.update(0, 0, t, m)
    assert accuracy.correct[0] == int((t.argmax(1) == m.dominant()).sum())

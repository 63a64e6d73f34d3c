"""labeling/debias.py against NumPy references: renormalisation, order debiasing,
self-consistency, harmful->harmless inversion, the same-position rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlaif_jax.labeling import alignment, debias


def _softmax2(a, b):
    return math.exp(a) / (math.exp(a) + math.exp(b))


def test_debias_average_matches_formula():
    rng = np.random.default_rng(0)
    lp1 = np.log(rng.dirichlet([1, 1, 1], size=50))[:, :2]  # unnormalised over the two
    lp2 = np.log(rng.dirichlet([1, 1, 1], size=50))[:, :2]
    s = debias.debias(lp1, lp2)
    for i in range(50):
        p1 = _softmax2(lp1[i, 0], lp1[i, 1])  # P₁("1")
        p2 = _softmax2(lp2[i, 1], lp2[i, 0])  # P₂("2")
        assert s.p_order1[i] == pytest.approx(p1, abs=1e-12)
        assert s.p_order2[i] == pytest.approx(p2, abs=1e-12)
        assert s.p[i] == pytest.approx(0.5 * (p1 + p2), abs=1e-12)


def test_renormalize_is_shift_invariant_and_handles_extremes():
    lp = np.array([[-1000.0, -1001.0], [0.0, -np.inf]])
    p = debias.renormalize(lp)
    assert p[0, 0] == pytest.approx(1 / (1 + math.exp(-1)))
    assert p[1].tolist() == [1.0, 0.0]


def test_pure_position_bias_cancels():
    # A labeler that always answers "1" regardless of content: each order alone is
    # certain, the debiased label is exactly 0.5 and every pair is same-position.
    lp = np.log(np.array([[0.9, 0.1]] * 4))
    s = debias.debias(lp, lp)
    np.testing.assert_allclose(s.p, 0.5)
    assert debias.same_position_preferred(s.p_order1, s.p_order2).all()


def test_invert_harmful():
    s = debias.SoftLabel(np.array([0.8, 0.3]), np.array([0.9, 0.2]), np.array([0.7, 0.4]))
    h = debias.invert_harmful(s)
    np.testing.assert_allclose(h.p, [0.2, 0.7])
    np.testing.assert_allclose(h.p_order1, [0.1, 0.8])
    np.testing.assert_allclose(h.p_order2, [0.3, 0.6])
    # Inversion commutes with the order average.
    np.testing.assert_allclose(h.p, 0.5 * (h.p_order1 + h.p_order2))


def test_self_consistency_average():
    rng = np.random.default_rng(1)
    samples = [debias.debias(rng.normal(size=(7, 2)), rng.normal(size=(7, 2))) for _ in range(5)]
    sc = debias.self_consistency(samples)
    ref = np.zeros(7)
    for s in samples:
        ref += s.p / 5
    np.testing.assert_allclose(sc.p, ref, atol=1e-12)
    np.testing.assert_allclose(sc.p_order1, np.mean([s.p_order1 for s in samples], 0))
    with pytest.raises(ValueError):
        debias.self_consistency([])


def test_same_position_matches_evaluation():
    rng = np.random.default_rng(2)
    p1, p2 = rng.uniform(size=200), rng.uniform(size=200)
    rate, _ = alignment.same_position_rate(p1, p2)
    assert debias.same_position_preferred(p1, p2).mean() == pytest.approx(rate.value)
    # Explicit cases: prefers resp1 in both orders -> content, not position.
    assert not debias.same_position_preferred(np.array([0.9]), np.array([0.8]))[0]
    # Picks the first shown both times (resp1, then resp2): position.
    assert debias.same_position_preferred(np.array([0.9]), np.array([0.2]))[0]

"""evaluation/length_control.py: the length-controlled win rate against a reference
logistic fit, and separable outcomes that stay finite."""

import numpy as np
import pytest
from scipy import optimize

from rlaif_jax.evaluation import length_control


def _reference_logistic(x, y):
    def nll(w):
        z = w[0] + w[1] * x
        return np.sum(np.logaddexp(0, z) - y * z)

    return optimize.minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x


def test_length_controlled_win_rate_matches_reference_fit():
    rng = np.random.default_rng(1)
    len_b = rng.integers(60, 200, size=2000).astype(float)
    ratio = np.exp(rng.normal(0.2, 0.3, size=2000))
    len_a = len_b * ratio
    # Preference driven partly by length: true P at ratio 1 is sigmoid(-0.5 + 1.2) ≈ 0.668.
    p = 1 / (1 + np.exp(-(-0.5 + 1.2 * ratio)))
    y = (rng.random(2000) < p).astype(float)
    r = length_control.length_controlled_win_rate(len_a, len_b, y)
    w = _reference_logistic(len_a / len_b, y)
    expected = 1 / (1 + np.exp(-(w[0] + w[1])))
    assert r.value == pytest.approx(expected, abs=1e-5)
    assert r.ci_low < r.value < r.ci_high
    # The uncorrected win rate is higher than the length-controlled one (A is longer).
    assert y.mean() > r.value


def test_length_control_separable_data_stays_finite():
    r = length_control.length_controlled_win_rate([10, 20, 30], [20, 20, 20], [0, 1, 1])
    assert 0.0 <= r.value <= 1.0


def test_length_control_of_separable_outcomes_stays_finite():
    """Every response judged the same way (e.g. all harmless): the logistic fit's logit
    runs off to large values; the rate and its interval stay finite, near 1."""
    from rlaif_jax.evaluation.length_control import logistic_rate_at

    x = np.linspace(0.5, 2.0, 40)
    high, low = logistic_rate_at(x, np.ones(40)), logistic_rate_at(x, np.zeros(40))
    assert 0.99 < high.value <= 1.0 and 0.0 <= low.value < 0.01
    for rate in (high, low):
        assert 0.0 <= rate.ci_low <= rate.value <= rate.ci_high <= 1.0

"""rates.py, the statistics between arms: Welch's t-test and the exact binomial test
against NumPy/`math` references, the percentile bootstrap, rankings without ties and
rank-based win rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rlaif_jax import rates


def _welch_reference(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return t, df


def test_welch_t_test_matches_the_formula():
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.62).astype(float)
    b = (rng.random(150) < 0.55).astype(float)
    res = rates.two_sample_t_test(a, b)
    t, df = _welch_reference(a, b)
    assert res.statistic == pytest.approx(t, rel=1e-12)
    from scipy import stats  # the p-value of that t at Welch's df

    assert res.p_value == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    assert (res.n_a, res.n_b) == (200, 150)
    assert math.isnan(rates.two_sample_t_test([1.0], [0.0, 1.0]).p_value)
    assert rates.two_sample_t_test([1, 1], [1, 1]).p_value == 1.0


def test_binomial_test_is_the_exact_two_sided_sum():
    p = [0.9] * 14 + [0.1] * 6 + [0.5] * 5  # 14 wins, 6 losses, 5 ties dropped
    res = rates.binomial_test(p)
    n, k = 20, 14
    pmf = [math.comb(n, i) * 0.5**n for i in range(n + 1)]
    expected = sum(q for q in pmf if q <= pmf[k] * (1 + 1e-7))
    assert res.p_value == pytest.approx(expected, rel=1e-9)
    assert (res.n_a, res.n_b, res.statistic) == (14, 6, 0.7)
    assert math.isnan(rates.binomial_test([0.5, 0.5]).p_value)


def test_bootstrap_rate_interval_and_seed():
    x = np.r_[np.ones(70), np.zeros(30)]
    r = rates.bootstrap_rate(x, seed=1)
    assert r.value == 0.7 and r.n == 100
    assert r.ci_low < 0.7 < r.ci_high
    # The percentile interval of a mean of Bernoulli(0.7) over 100: about ±0.09.
    assert 0.05 < r.ci_high - 0.7 < 0.13 and 0.05 < 0.7 - r.ci_low < 0.13
    assert rates.bootstrap_rate(x, seed=1) == r
    assert r.p_value_vs_half < 0.01
    assert rates.bootstrap_rate(np.r_[np.ones(5), np.zeros(5)]).p_value_vs_half > 0.5
    assert math.isnan(rates.bootstrap_rate([]).value)


def test_ranks_without_ties_break_ties_at_random_but_reproducibly():
    scores = np.array([[0.1, 0.9, 0.5], [2.0, 2.0, 2.0]])
    ranks = rates.ranks_without_ties(scores, seed=3)
    np.testing.assert_array_equal(ranks[0], [3, 1, 2])
    assert sorted(ranks[1]) == [1, 2, 3]
    np.testing.assert_array_equal(rates.ranks_without_ties(scores, seed=3), ranks)
    seen = {tuple(rates.ranks_without_ties(scores, seed=s)[1]) for s in range(30)}
    assert len(seen) > 1  # ties are not always broken the same way
    with pytest.raises(ValueError, match="contexts, policies"):
        rates.ranks_without_ties([1.0, 2.0])


def test_rank_win_rates():
    ranks = np.array([[1, 2, 3], [2, 1, 3], [1, 3, 2], [3, 2, 1]])
    out = rates.rank_win_rates(ranks, ["rlaif", "rlhf", "sft"])
    assert out["rlaif_vs_rlhf"].value == 0.5
    assert out["rlaif_vs_sft"].value == 0.75
    assert out["rlhf_vs_sft"].value == 0.5
    assert out["rlaif_vs_sft"].n == 4
    with pytest.raises(ValueError, match="permutation"):
        rates.rank_win_rates([[1, 1, 2]], ["a", "b", "c"])


def test_mean_rate_matches_scipy_t_interval():
    rng = np.random.default_rng(0)
    x = (rng.random(300) < 0.67).astype(float)
    r = rates.mean_rate(x)
    lo, hi = stats.t.interval(0.95, df=len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert r.value == pytest.approx(x.mean())
    assert r.ci_low == pytest.approx(lo) and r.ci_high == pytest.approx(hi)
    assert r.n == 300
    assert r.p_value_vs_half == pytest.approx(stats.ttest_1samp(x, 0.5).pvalue)


def test_win_outcomes_ties_count_half():
    np.testing.assert_array_equal(rates.win_outcomes([0.9, 0.1, 0.5]), [1.0, 0.0, 0.5])


def test_per_prompt_mean_groups_each_prompts_samples():
    outcomes = [1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0, 0.0, 0.5]  # 3 prompts x 3 samples
    np.testing.assert_allclose(rates.per_prompt_mean(outcomes, 3), [0.5, 1.0, 1 / 6])
    r = rates.mean_rate(rates.per_prompt_mean(outcomes, 3))
    assert r.n == 3  # the interval counts prompts, not samples
    with pytest.raises(ValueError, match="do not split into 2 prompts"):
        rates.per_prompt_mean(outcomes, 2)


def test_t_binomial_and_bootstrap_agree_with_scipy():
    from scipy import stats

    rng = np.random.default_rng(3)
    a = (rng.random(300) < 0.66).astype(float)
    b = (rng.random(240) < 0.58).astype(float)
    welch = stats.ttest_ind(a, b, equal_var=False)
    res = rates.two_sample_t_test(a, b)
    assert res.statistic == pytest.approx(welch.statistic, rel=1e-10)
    assert res.p_value == pytest.approx(welch.pvalue, rel=1e-8)
    prefs = np.r_[np.full(31, 0.8), np.full(19, 0.3), np.full(4, 0.5)]  # 31 wins, 19 losses
    assert rates.binomial_test(prefs).p_value == pytest.approx(
        stats.binomtest(31, 50, 0.5).pvalue, rel=1e-9
    )
    # Percentile bootstrap of a mean: the same interval as SciPy's up to resampling noise.
    x = (rng.random(400) < 0.7).astype(float)
    ours = rates.bootstrap_rate(x, num_resamples=20000, seed=5)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=20000, method="percentile", random_state=6
    ).confidence_interval
    assert ours.ci_low == pytest.approx(ref.low, abs=0.006)
    assert ours.ci_high == pytest.approx(ref.high, abs=0.006)

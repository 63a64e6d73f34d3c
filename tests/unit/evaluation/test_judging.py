"""evaluation/judging.py: each win-rate row carries the exact binomial test of its
head-to-head and Welch t-tests against the other arms on the same baseline; a judge with
scores adds rank-based win rates; the length-controlled win rate is fitted per comparison."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from rlaif_jax.evaluation import judging, report
from rlaif_jax.rates import per_prompt_mean


def _judge(p_by_pair):
    def judge_fn(judged, texts_a, texts_b):
        return p_by_pair[(texts_a[0][0], texts_b[0][0])]

    return judge_fn


def test_rows_carry_binomial_and_between_arm_tests():
    rng = np.random.default_rng(0)
    n = 120
    wins_x = (rng.random(n) < 0.7).astype(float)
    wins_y = (rng.random(n) < 0.5).astype(float)
    responses = {"x": ["x"] * n, "y": ["y"] * n, "s": ["s"] * n}
    judge_fn = _judge(
        {("x", "s"): np.where(wins_x > 0, 0.8, 0.2), ("y", "s"): np.where(wins_y > 0, 0.8, 0.2)}
    )
    rows = judging.judge_pairs(judge_fn, "ai", [{}] * n, responses, [("x", "s"), ("y", "s")], n)
    by = {(r["a"], r["b"]): r for r in rows}
    k = int(wins_x.sum())
    assert by[("x", "s")]["binomial"]["p_value"] == pytest.approx(stats.binomtest(k, n, 0.5).pvalue)
    welch = stats.ttest_ind(wins_x, wins_y, equal_var=False)
    t = by[("x", "s")]["vs_arms"]["y"]
    assert t["p_value"] == pytest.approx(welch.pvalue) and t["statistic"] == pytest.approx(
        welch.statistic
    )
    assert by[("y", "s")]["vs_arms"]["x"]["statistic"] == pytest.approx(-welch.statistic)

    text = report.render_markdown({"win_rates": rows, "policies": {}})
    assert "p (binomial, vs 50%)" in text
    assert f"{welch.pvalue:.3g}" in text  # the x-against-y test, listed once
    assert text.count("against") == 1


def test_rank_rows_from_judge_scores():
    scores = {"a": np.array([3.0, 1.0, 2.0, 5.0]), "b": np.array([2.0, 2.0, 2.0, 1.0])}
    scores["c"] = np.array([1.0, 3.0, 2.0, 0.0])
    rows = judging.rank_rows("oracle", {k: [""] * 4 for k in scores}, scores, 4, seed=0)
    by = {(r["a"], r["b"]): r["rate"] for r in rows}
    assert set(by) == {("a", "b"), ("a", "c"), ("b", "c")}
    # a above b on contexts 0 and 3; context 2 is a three-way tie broken at random.
    assert by[("a", "b")]["n"] == 4
    assert 0.5 <= by[("a", "b")]["value"] <= 0.75
    assert by[("b", "c")]["value"] in (0.5, 0.75)
    assert all(r["judge"] == "oracle, ranking" for r in rows)


def _reference_lc(ratio, y):
    def nll(w):
        z = w[0] + w[1] * ratio
        return np.sum(np.logaddexp(0, z) - y * z)

    w = optimize.minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    return 1 / (1 + np.exp(-(w[0] + w[1])))


def test_judge_pairs_fits_length_control_per_comparison():
    """k = 2 samples per prompt whose lengths differ within a prompt: the fit is on the
    N·k per-sample rows (each judgement's own length ratio), not on per-prompt means; the
    plain win rate keeps per-prompt means (n = prompts)."""
    rng = np.random.default_rng(2)
    num_prompts, k = 150, 2
    total = num_prompts * k
    len_b = rng.integers(40, 120, size=total)
    # Within each prompt one sample of A is much longer than the other.
    scale = np.where(
        np.arange(total) % 2 == 0, rng.uniform(0.6, 1.0, total), rng.uniform(1.2, 2.2, total)
    )
    len_a = np.maximum((len_b * scale).astype(int), 1)
    ratio = len_a / len_b
    p_true = 1 / (1 + np.exp(-(-2.0 + 2.3 * ratio)))
    wins = rng.random(total) < p_true
    responses = {"a": ["x" * int(n) for n in len_a], "b": ["y" * int(n) for n in len_b]}

    def judge_fn(judged, texts_a, texts_b):
        assert texts_a == responses["a"] and texts_b == responses["b"]
        return np.where(wins, 0.9, 0.1)

    (row,) = judging.judge_pairs(
        judge_fn, "ai", [{}] * num_prompts, responses, [("a", "b")], num_prompts
    )
    y = wins.astype(float)
    lc = row["length_controlled"]
    assert lc["value"] == pytest.approx(_reference_lc(ratio, y), abs=1e-5)
    assert lc["n"] == total  # the fit's rows are comparisons
    per_prompt = _reference_lc(
        per_prompt_mean(len_a, num_prompts) / per_prompt_mean(len_b, num_prompts),
        per_prompt_mean(y, num_prompts),
    )
    assert abs(per_prompt - lc["value"]) > 1e-3  # the old per-prompt fit reads differently
    assert row["rate"]["value"] == pytest.approx(y.mean())
    assert row["rate"]["n"] == num_prompts  # the plain rate's interval counts prompts


def test_rank_rows_average_each_prompts_samples():
    """k = 2 samples per prompt: the rate's n counts the 2 prompts, not the 4 rankings."""
    scores = {"a": np.array([2.0, 0.0, 2.0, 2.0]), "b": np.array([1.0, 1.0, 1.0, 1.0])}
    (row,) = judging.rank_rows("oracle", {k: [""] * 4 for k in scores}, scores, 2)
    assert row["rate"]["n"] == 2
    assert row["rate"]["value"] == 0.75  # prompt 0: 1 of 2 samples ahead, prompt 1: 2 of 2

"""evaluation/stage.py statistics: each win-rate row carries the exact binomial test of its
head-to-head and Welch t-tests against the other arms on the same baseline; a judge with
scores adds rank-based win rates; the report shows the p-values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rlaif_jax.evaluation import report, stage


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
    rows = stage.judge_pairs(judge_fn, "ai", [{}] * n, responses, [("x", "s"), ("y", "s")], n)
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
    rows = stage.rank_rows("oracle", {k: [""] * 4 for k in scores}, scores, seed=0)
    by = {(r["a"], r["b"]): r["rate"] for r in rows}
    assert set(by) == {("a", "b"), ("a", "c"), ("b", "c")}
    # a above b on contexts 0 and 3; context 2 is a three-way tie broken at random.
    assert by[("a", "b")]["n"] == 4
    assert 0.5 <= by[("a", "b")]["value"] <= 0.75
    assert by[("b", "c")]["value"] in (0.5, 0.75)
    assert all(r["judge"] == "oracle, ranking" for r in rows)


def test_report_shows_bootstrap_intervals_of_alignment_and_rm_accuracy():
    metrics = {
        "win_rates": [],
        "policies": {},
        "alignment_by_variant": {
            "base": {
                "labeler_alignment": 0.7,
                "labeler_alignment_ci_low": 0.65,
                "labeler_alignment_ci_high": 0.75,
            }
        },
        "rm_pairwise_accuracy_ai": 0.6,
        "rm_pairwise_accuracy_ai_ci_low": 0.55,
        "rm_pairwise_accuracy_ai_ci_high": 0.66,
        "rm_pairwise_accuracy_human": 0.62,  # an older RM without an interval
    }
    text = report.render_markdown(metrics)
    assert "| base | 70.0% [65.0%, 75.0%] |" in text
    assert "| AI feedback (RLAIF) | 60.0% [55.0%, 66.0%] |" in text
    assert "| human feedback (RLHF) | 62.0% |" in text

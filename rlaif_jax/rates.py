"""Rates with confidence intervals, as the paper reports them (t-based on per-example outcomes).

Shared by the stages that report rates: evaluation (win rates, harmless rates) and
labeling (labeler alignment, position bias).

A "rate" is the mean of per-example outcomes in [0, 1] (binary wins, or soft
preferences such as P(A ≻ B) from a judge). The paper tests with two-sample t-tests,
so the interval is the Student-t interval of the mean; for binary outcomes this is
close to the Wald interval and is reported with the number of examples.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class Rate:
    """A mean outcome with a two-sided confidence interval.

    value: mean in [0, 1]; ci_low/ci_high: interval clipped to [0, 1]; n: examples;
    p_value_vs_half: two-sided one-sample t-test of mean == 0.5 (NaN when n < 2).
    """

    value: float
    ci_low: float
    ci_high: float
    n: int
    p_value_vs_half: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def mean_rate(outcomes, confidence: float = 0.95) -> Rate:
    """Mean of outcomes [N] with a Student-t interval; N = 0 gives NaNs."""
    x = np.asarray(outcomes, dtype=np.float64).reshape(-1)
    n = int(x.size)
    if n == 0:
        return Rate(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Rate(mean, 0.0, 1.0, n, math.nan)
    sem = float(x.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    if sem > 0:
        t = (mean - 0.5) / sem
        p = float(2 * stats.t.sf(abs(t), df=n - 1))
    else:
        p = 0.0 if mean != 0.5 else 1.0
    return Rate(mean, max(0.0, mean - half), min(1.0, mean + half), n, p)


def win_outcomes(p_a_preferred, hard: bool = True) -> np.ndarray:
    """Per-example outcomes from P(A ≻ B) [N]: 1/0 by argmax (ties 0.5), or the soft values."""
    p = np.asarray(p_a_preferred, dtype=np.float64)
    if not hard:
        return p
    return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))


def per_prompt_mean(values, num_prompts: int) -> np.ndarray:
    """[N · k] per-sample values, prompt-major (k samples of prompt 0 first) -> [N] means
    over each prompt's k samples, so that intervals count prompts, not samples."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if num_prompts <= 0 or x.size % num_prompts:
        raise ValueError(f"{x.size} values do not split into {num_prompts} prompts")
    return x.reshape(num_prompts, -1).mean(axis=1)


# ----------------------------------------------------------------------------- tests between arms
@dataclasses.dataclass(frozen=True)
class Comparison:
    """A test between two arms: statistic, two-sided p-value, and what was tested."""

    test: str
    statistic: float
    p_value: float
    n_a: int
    n_b: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def two_sample_t_test(outcomes_a, outcomes_b) -> Comparison:
    """Welch's two-sample t-test of mean(a) == mean(b) on per-example outcomes [Na], [Nb]
    (the paper compares arms' win rates against SFT this way: e.g. RLAIF vs SFT against
    RLHF vs SFT). NaN when either arm has fewer than 2 examples."""
    a = np.asarray(outcomes_a, np.float64).reshape(-1)
    b = np.asarray(outcomes_b, np.float64).reshape(-1)
    if a.size < 2 or b.size < 2:
        return Comparison("welch_t", math.nan, math.nan, int(a.size), int(b.size))
    if a.std() == 0 and b.std() == 0:
        p = 1.0 if a.mean() == b.mean() else 0.0
        return Comparison("welch_t", math.nan, p, int(a.size), int(b.size))
    res = stats.ttest_ind(a, b, equal_var=False)
    return Comparison("welch_t", float(res.statistic), float(res.pvalue), int(a.size), int(b.size))


def binomial_test(p_a_preferred) -> Comparison:
    """Exact two-sided binomial test of a head-to-head (e.g. RLAIF vs RLHF) against 50%:
    wins of A over the decided comparisons (P > 0.5 vs P < 0.5; ties dropped). n_a: A's
    wins, n_b: B's wins; statistic: A's share of the decided comparisons."""
    p = np.asarray(p_a_preferred, np.float64).reshape(-1)
    wins, losses = int((p > 0.5).sum()), int((p < 0.5).sum())
    if wins + losses == 0:
        return Comparison("binomial", math.nan, math.nan, wins, losses)
    res = stats.binomtest(wins, wins + losses, 0.5)
    return Comparison("binomial", wins / (wins + losses), float(res.pvalue), wins, losses)


# ----------------------------------------------------------------------------- bootstrap
def bootstrap_rate(
    outcomes,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
    statistic=np.mean,
) -> Rate:
    """Percentile-bootstrap interval of `statistic` over per-example outcomes [N] (for
    labeler alignment and RM accuracy, where the paper reports a point estimate and the
    outcomes are far from normal on small sets). p_value_vs_half: the share of resamples
    on the other side of 0.5 from the estimate, doubled (two-sided), at least 1/R."""
    x = np.asarray(outcomes, np.float64).reshape(-1)
    n = int(x.size)
    if n == 0:
        return Rate(math.nan, math.nan, math.nan, 0, math.nan)
    value = float(statistic(x))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(num_resamples, n))
    boot = np.asarray([statistic(x[i]) for i in idx], np.float64)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    other_side = (boot <= 0.5) if value > 0.5 else (boot >= 0.5)
    p = min(1.0, max(2.0 * float(other_side.mean()), 1.0 / num_resamples))
    return Rate(value, max(0.0, float(low)), min(1.0, float(high)), n, p)


# ----------------------------------------------------------------------------- ranking
def ranks_without_ties(scores, seed: int = 0) -> np.ndarray:
    """[N, K] scores of K policies on each of N contexts -> [N, K] ranks 1..K (1 = best),
    ties broken uniformly at random (seeded), as a rater who must rank without ties."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be [contexts, policies], got shape {s.shape}")
    jitter = np.random.default_rng(seed).random(s.shape)
    order = np.lexsort((jitter, -s), axis=-1)  # best first; random among equals
    ranks = np.empty_like(order)
    rows = np.arange(s.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, s.shape[1] + 1)[None, :]
    return ranks


def rank_win_rates(ranks, names, num_prompts: int | None = None) -> dict[str, Rate]:
    """Pairwise win rates from per-context rankings [N, K] (paper §4: raters rank all K
    policies' responses on one context; A beats B where A is ranked above B).
    Returns {"<a>_vs_<b>": Rate} for every ordered pair a < b in `names` order.
    num_prompts: the N rankings are k samples of each of num_prompts prompts
    (prompt-major); outcomes are averaged per prompt first, so intervals count prompts."""
    r = np.asarray(ranks)
    if r.ndim != 2 or r.shape[1] != len(names):
        raise ValueError(f"ranks of shape {r.shape} do not match {len(names)} policy names")
    if np.any(np.sort(r, axis=1) != np.arange(1, r.shape[1] + 1)[None, :]):
        raise ValueError("each row of ranks must be a permutation of 1..K (no ties)")
    out = {}
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            wins = (r[:, i] < r[:, j]).astype(np.float64)
            if num_prompts is not None:
                wins = per_prompt_mean(wins, num_prompts)
            out[f"{a}_vs_{names[j]}"] = mean_rate(wins)
    return out

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

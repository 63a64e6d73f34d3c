"""Length-controlled win rate (Stiennon et al. 2020, as used in the RLAIF paper App. J).

Fit a logistic regression of 1[A preferred] on the length ratio len(A)/len(B)
(characters) and read the predicted win rate at ratio 1.0. The fit is plain
Newton-Raphson (IRLS) on two parameters, with a small ridge term so separable data
(e.g. A always longer and always preferred) stays finite.
"""

from __future__ import annotations

import math

import numpy as np

from rlaif_jax.rates import Rate


def fit_logistic(x, y, ridge: float = 1e-6, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression y ~ sigmoid(w0 + w1 * x). x, y: [N]. Returns (w [2], covariance [2,2])."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)  # [N, 2]
    w = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        grad = design.T @ (y - p) - ridge * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w + step
        if np.max(np.abs(step)) < 1e-10:
            break
    p = 1.0 / (1.0 + np.exp(-(design @ w)))
    hess = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
    return w, np.linalg.inv(hess)


def length_controlled_win_rate(len_a, len_b, a_preferred, ratio: float = 1.0) -> Rate:
    """Predicted P(A preferred) at len(A)/len(B) == ratio, with a delta-method 95% interval.

    len_a, len_b: [N] character lengths; a_preferred: [N] outcomes in [0, 1].
    """
    len_a = np.maximum(np.asarray(len_a, dtype=np.float64), 1.0)
    len_b = np.maximum(np.asarray(len_b, dtype=np.float64), 1.0)
    return logistic_rate_at(len_a / len_b, a_preferred, at=ratio)


def logistic_rate_at(x, y, at: float = 1.0) -> Rate:
    """Fits y ~ sigmoid(w0 + w1 · x) and predicts at x = `at`, with a delta-method 95%
    interval on the logit scale. x, y: [N]; outcomes y in [0, 1]. N < 2 gives NaNs.

    p_value_vs_half is the two-sided z-test of the predicted logit == 0 (rate 50%).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n = int(y.size)
    if n < 2:
        return Rate(math.nan, math.nan, math.nan, n, math.nan)
    w, cov = fit_logistic(x, y)
    z = np.array([1.0, at])
    logit = float(z @ w)
    se = float(math.sqrt(max(z @ cov @ z, 0.0)))

    def sig(v: float) -> float:  # no overflow for the huge logits of separable data
        return 0.5 * (1.0 + math.tanh(0.5 * v))

    from scipy import stats

    p_value = float(2 * stats.norm.sf(abs(logit) / se)) if se > 0 else math.nan
    return Rate(sig(logit), sig(logit - 1.96 * se), sig(logit + 1.96 * se), n, p_value)

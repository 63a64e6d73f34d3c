"""Soft labels from candidate log-probs: renormalisation, position debiasing, self-
consistency, harmful->harmless inversion (paper §1.3, §2.4, §2.5, §2.2). Pure NumPy.

Conventions: `logprobs [..., 2]` are the labeler's log-probs of the tokens "1" and "2"
after the ending; a *shown order* is either the original (response1 first) or the
swapped one (response2 first). Every returned probability is P(response1 ≻ response2)
in the ORIGINAL order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def renormalize(logprobs: np.ndarray) -> np.ndarray:
    """Softmax over the candidate axis (last): [..., K] log-probs -> [..., K] probs.

    Equivalent to renormalising the K candidate probabilities to sum to one.
    """
    x = np.asarray(logprobs, dtype=np.float64)
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


@dataclass(frozen=True)
class SoftLabel:
    """[B] arrays, all P(response1 ≻ response2) in the original order.

    p: the position-debiased soft label ½[P₁("1") + P₂("2")].
    p_order1: read with response1 shown first, P₁("1").
    p_order2: read with response1 shown second, P₂("2").
    """

    p: np.ndarray
    p_order1: np.ndarray
    p_order2: np.ndarray


def debias(logprobs_order1: np.ndarray, logprobs_order2: np.ndarray) -> SoftLabel:
    """Averages both shown orders back into the original order (§2.4).

    logprobs_order1: [B, 2] log P("1"), log P("2") with response1 shown first.
    logprobs_order2: [B, 2] the same with the responses swapped.
    """
    p1 = renormalize(logprobs_order1)[..., 0]  # P₁("1"): response1 (shown first) wins
    p2 = renormalize(logprobs_order2)[..., 1]  # P₂("2"): response1 (shown second) wins
    return SoftLabel(p=0.5 * (p1 + p2), p_order1=p1, p_order2=p2)


def self_consistency(labels: list[SoftLabel]) -> SoftLabel:
    """Averages S debiased labels (one per sampled rationale, §2.5): each field is the
    mean over samples of that field."""
    if not labels:
        raise ValueError("self_consistency needs at least one sample")
    return SoftLabel(
        p=np.mean([s.p for s in labels], axis=0),
        p_order1=np.mean([s.p_order1 for s in labels], axis=0),
        p_order2=np.mean([s.p_order2 for s in labels], axis=0),
    )


def invert_harmful(label: SoftLabel) -> SoftLabel:
    """A 'which is MORE HARMFUL' answer -> a harmlessness preference: P ↦ 1 − P.

    The harmless preamble asks for the more harmful response (§2.2), so P("response1")
    there is P(response1 is worse); the preference used for RM training is its
    complement. Applied after debiasing; it commutes with the order average.
    """
    return SoftLabel(p=1.0 - label.p, p_order1=1.0 - label.p_order1, p_order2=1.0 - label.p_order2)


def same_position_preferred(p_order1: np.ndarray, p_order2: np.ndarray) -> np.ndarray:
    """[B] bool: the argmax points at the same shown POSITION in both orders (§2.4).

    Position 1 is picked in order 1 when p_order1 > ½ and in order 2 when p_order2 ≤ ½
    (response1 then sits in position 2). Matches `labeling.alignment.same_position_rate`.
    """
    first1 = np.asarray(p_order1) > 0.5
    first2 = np.asarray(p_order2) <= 0.5
    return first1 == first2

"""AI labeler alignment and position bias (paper §5, §2.4)."""

from __future__ import annotations

import numpy as np

from rlaif_jax.rates import Rate, bootstrap_rate, mean_rate


def agreement(p_ai, human_label) -> np.ndarray:
    """[N] per-pair agreement of the AI distribution's argmax with the human label: 1 / 0,
    and 0.5 where either side is a tie.

    p_ai: [N] AI P(response1 ≻ response2); human_label: [N] 1.0 if response1 was
    human-preferred, 0.0 if response2, 0.5 for a tie (a rated pair with no preference).
    A tie on either side (p == 0.5 or label == 0.5) counts as half agreement, so neither
    side's tie is read as "response2 preferred".
    """
    p_ai = np.asarray(p_ai, dtype=np.float64)
    human = np.asarray(human_label, dtype=np.float64)
    agree = ((p_ai > 0.5) == (human > 0.5)).astype(np.float64)
    return np.where((p_ai == 0.5) | (human == 0.5), 0.5, agree)


def labeler_alignment(p_ai, human_label) -> Rate:
    """Share of pairs where argmax of the AI distribution matches the human label
    (`agreement`), with its t interval."""
    return mean_rate(agreement(p_ai, human_label))


def labeler_alignment_bootstrap(p_ai, human_label, seed: int = 0) -> Rate:
    """The same share with a percentile-bootstrap interval (`rates.bootstrap_rate`)."""
    return bootstrap_rate(agreement(p_ai, human_label), seed=seed)


def same_position_rate(p_order1, p_order2, inverted: bool = False) -> tuple[Rate, float]:
    """ "% Same Position Preferred" and the share of those that favour the first position.

    p_order1: [N] P(resp1 ≻ resp2) with resp1 shown first; p_order2: [N] the same
    preference read from the swapped order (resp1 shown second). The labeler prefers the
    same *position* both times when it picks resp1 in one order and resp2 in the other.
    inverted: the preferences were inverted from a "which is MORE harmful" answer
      (`PromptVariant.inverts_labels`), so the position the labeler PICKED is the one
      holding the dispreferred response; the metrics read the picked position (its raw
      answer), whatever the inversion. The same-position rate is unchanged by inversion;
      the first/second share is not.
    Returns (rate of same-position pairs, fraction of those where the picked position is
    the first shown).
    """
    p1, p2 = np.asarray(p_order1, np.float64), np.asarray(p_order2, np.float64)
    if inverted:  # back to the raw answers P₁("1"), P₂("2")
        p1, p2 = 1.0 - p1, 1.0 - p2
    first_in_order1 = p1 > 0.5  # picked position 1 in the original order
    first_in_order2 = p2 <= 0.5  # picked position 1 in the swapped order
    same = first_in_order1 == first_in_order2
    favour_first = float(np.mean(first_in_order1[same])) if same.any() else float("nan")
    return mean_rate(same.astype(np.float64)), favour_first

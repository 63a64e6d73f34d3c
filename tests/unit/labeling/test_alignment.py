"""labeling/alignment.py: per-pair agreement (ties count half, label ties too), its
bootstrap interval, and the same-position rate (raw answers on inverted prompts)."""

from __future__ import annotations

import numpy as np
import pytest

from rlaif_jax.labeling import alignment, stage
from rlaif_jax.rates import bootstrap_rate
from tests.unit._helpers import _reference_agreement


def test_agreement_and_bootstrap_interval():
    p = np.array([0.9, 0.2, 0.5, 0.7, 0.6])
    human = np.array([1.0, 1.0, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(alignment.agreement(p, human), [1.0, 0.0, 0.5, 0.5, 1.0])
    assert alignment.labeler_alignment(p, human).value == 0.6
    rng = np.random.default_rng(0)
    human = (rng.random(300) < 0.5).astype(float)
    p = np.where(rng.random(300) < 0.7, human, 1 - human) * 0.6 + 0.2  # 70% agree
    boot = alignment.labeler_alignment_bootstrap(p, human, seed=4)
    assert boot == bootstrap_rate(alignment.agreement(p, human), seed=4)
    assert boot.ci_low < boot.value < boot.ci_high and boot.n == 300
    assert abs(boot.value - 0.7) < 0.06


def test_alignment_and_same_position_reference():
    p_ai = np.array([0.8, 0.3, 0.6, 0.5, 0.1])
    human = np.array([1, 1, 0, 1, 0])
    a = alignment.labeler_alignment(p_ai, human)
    assert a.value == pytest.approx(np.mean([1, 0, 0, 0.5, 1]))
    # Order 1 picks position 1 for pairs 0,1; swapped order picks position 1 for pairs 0,2.
    p1 = np.array([0.9, 0.7, 0.2, 0.3])
    p2 = np.array([0.4, 0.8, 0.1, 0.9])
    rate, favour_first = alignment.same_position_rate(p1, p2)
    # same position: pair0 (pos1, pos1), pair2 (pos2 then pos1? p1=.2 -> pos2; p2=.1 -> pos1) no;
    # pair1 (pos1, pos2) no; pair3 (pos2, pos2) yes.
    assert rate.value == pytest.approx(0.5)
    assert favour_first == pytest.approx(0.5)


def test_labeler_alignment_counts_label_ties_half():
    p_ai = np.array([0.8, 0.3, 0.6, 0.5, 0.1, 0.9, 0.2, 0.5, 0.7])
    human = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 1.0])
    got = alignment.labeler_alignment(p_ai, human)
    ref = _reference_agreement(p_ai - 0.5, human)
    assert got.value == pytest.approx(ref.mean())
    # A label tie is half whatever the AI says (before the fix: 0 for p > 0.5, 1 for p < 0.5).
    assert alignment.labeler_alignment([0.9, 0.1], [0.5, 0.5]).value == pytest.approx(0.5)
    assert alignment.labeler_alignment([0.9, 0.9], [0.5, 0.5]).value == pytest.approx(0.5)


def test_same_position_rate_reads_raw_answers_when_inverted():
    # Preferences of a labeler that always picks position 2 on a 'more harmful' prompt:
    # raw P1("1") = 0.2 -> pref 0.8; raw P2("2") = 0.8 -> pref 0.2.
    p1, p2 = np.full(5, 0.8), np.full(5, 0.2)
    same, first = alignment.same_position_rate(p1, p2, inverted=True)
    assert same.value == pytest.approx(1.0) and first == pytest.approx(0.0)
    same, first = alignment.same_position_rate(p1, p2)  # the same numbers as preferences
    assert same.value == pytest.approx(1.0) and first == pytest.approx(1.0)
    m = stage.labeling_metrics(
        [{"label": 0.5, "p_order1": 0.8, "p_order2": 0.2, "human_label": 1.0}] * 3, inverted=True
    )
    assert m["position_bias_favour_first"] == pytest.approx(0.0)

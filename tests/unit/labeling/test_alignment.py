"""labeling/alignment.py: per-pair agreement (ties count half), and its bootstrap interval."""

from __future__ import annotations

import numpy as np

from rlaif_jax.labeling import alignment
from rlaif_jax.rates import bootstrap_rate


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

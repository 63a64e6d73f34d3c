"""References the unit tests of several packages share."""

from __future__ import annotations

import numpy as np


def _reference_agreement(pred_margin, label):
    """NumPy reference: 1 if the model's preferred side (margin > 0: response1) is the
    label's, 0 if the other, 0.5 when either side is a tie."""
    out = []
    for m, y in zip(pred_margin, label):
        if m == 0 or y == 0.5:
            out.append(0.5)
        else:
            out.append(float((m > 0) == (y > 0.5)))
    return np.array(out)

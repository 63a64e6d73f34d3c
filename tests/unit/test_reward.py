"""reward.py: the reported held-out RM accuracy counts label ties one half."""

import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax import reward
from rlaif_jax.decoding import score
from tests.unit._helpers import _reference_agreement


def test_held_out_pairwise_accuracy_counts_label_ties_half(monkeypatch):
    """`reward.pairwise_accuracy_on` (the reported RM accuracy) with a stand-in scorer
    (score = first token) over padded, 8-way batches against the NumPy reference."""
    rng = np.random.default_rng(1)
    n = 21  # not a multiple of the batch size: the last batch is padded
    first1 = rng.integers(0, 5, size=n)
    first2 = rng.integers(0, 5, size=n)
    labels = rng.choice([0.0, 1.0, 0.5], size=n)
    labels[:3] = 0.5
    first1[:3], first2[:3] = 4, 0  # RM clearly prefers response1 on the tie-labelled pairs
    pairs = [
        {"a": int(a), "b": int(b), "label": float(y)} for a, b, y in zip(first1, first2, labels)
    ]

    def batch_fn(chunk):
        t1 = np.array([[p["a"], 1, 1, 1] for p in chunk], np.int32)
        t2 = np.array([[p["b"], 1, 1, 1] for p in chunk], np.int32)
        lengths = np.full(len(chunk), 4, np.int32)
        label = np.array([p["label"] for p in chunk], np.float32)
        return {
            "tokens1": t1,
            "lengths1": lengths,
            "tokens2": t2,
            "lengths2": lengths,
            "label": label,
        }

    def fake_make_scorer(config, mesh, rules, kind):
        assert kind == "sequence_scores"
        return lambda params, tokens, lengths: jnp.asarray(tokens)[:, 0].astype(jnp.float32)

    monkeypatch.setattr(score, "make_scorer", fake_make_scorer)
    got = reward.pairwise_accuracy_on(None, None, pairs, batch_fn, batch_size=8)
    ref = _reference_agreement(first1.astype(float) - first2, labels).mean()
    assert got == pytest.approx(ref)

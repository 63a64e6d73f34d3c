"""train/losses.py: SFT and soft-label RM losses against NumPy references; pairwise
accuracy counts score and label ties one half."""

import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.train import losses
from tests.unit._helpers import _reference_agreement


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_next_token_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 11)).astype(np.float32)
    tokens = rng.integers(0, 11, size=(3, 6))
    mask = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]], np.float32)
    loss, count = losses.next_token_loss(jnp.array(logits), jnp.array(tokens), jnp.array(mask))
    lp = _np_log_softmax(logits)
    nll = [-lp[b, t - 1, tokens[b, t]] for b in range(3) for t in range(1, 6) if mask[b, t]]
    assert float(count) == len(nll)
    np.testing.assert_allclose(float(loss), np.mean(nll), rtol=1e-6)


def test_next_token_loss_soft_targets_match_numpy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    tokens = rng.integers(0, 7, size=(2, 5))
    mask = np.array([[0, 1, 1, 1, 1], [0, 0, 1, 1, 0]], np.float32)
    alt = np.zeros((2, 5), np.int64)
    weight = np.zeros((2, 5), np.float32)
    alt[0, 4], weight[0, 4] = 2, 0.3  # "token with 0.7, token 2 with 0.3"
    alt[1, 3], weight[1, 3] = 5, 0.5
    loss, count = losses.next_token_loss(
        jnp.array(logits), jnp.array(tokens), jnp.array(mask), jnp.array(alt), jnp.array(weight)
    )
    lp = _np_log_softmax(logits)
    nll = [
        -(1 - weight[b, t]) * lp[b, t - 1, tokens[b, t]] - weight[b, t] * lp[b, t - 1, alt[b, t]]
        for b in range(2)
        for t in range(1, 5)
        if mask[b, t]
    ]
    assert float(count) == len(nll)
    np.testing.assert_allclose(float(loss), np.mean(nll), rtol=1e-6)
    # Zero weights are the hard loss.
    hard, _ = losses.next_token_loss(jnp.array(logits), jnp.array(tokens), jnp.array(mask))
    zero, _ = losses.next_token_loss(
        jnp.array(logits), jnp.array(tokens), jnp.array(mask), jnp.array(alt), jnp.zeros((2, 5))
    )
    np.testing.assert_allclose(float(zero), float(hard), rtol=1e-6)


@pytest.mark.parametrize("p", [0.0, 1.0, 0.3, 0.85])
def test_soft_label_rm_loss_matches_numpy(p):
    rng = np.random.default_rng(1)
    r1, r2 = rng.normal(size=8) * 3, rng.normal(size=8) * 3
    labels = np.full(8, p)
    got = float(losses.soft_label_rm_loss(jnp.array(r1), jnp.array(r2), jnp.array(labels)))

    def sig(x):
        return 1 / (1 + np.exp(-x))

    ref = -np.mean(labels * np.log(sig(r1 - r2)) + (1 - labels) * np.log(sig(r2 - r1)))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_rm_loss_is_bradley_terry_for_hard_labels_and_stable():
    r1, r2 = jnp.array([50.0, -50.0]), jnp.array([-50.0, 50.0])
    # Confidently right: ~0 loss; confidently wrong: ~100 (finite, no overflow).
    assert float(losses.soft_label_rm_loss(r1, r2, jnp.array([1.0, 0.0]))) < 1e-6
    assert float(losses.soft_label_rm_loss(r1, r2, jnp.array([0.0, 1.0]))) == pytest.approx(100.0)


def test_pairwise_accuracy():
    acc = losses.pairwise_accuracy(
        jnp.array([1.0, 0.0, 2.0, -1.0]),
        jnp.array([0.0, 1.0, 3.0, -2.0]),
        jnp.array([1.0, 0.0, 1.0, 0.2]),
    )
    assert float(acc) == pytest.approx(0.5)


def test_pairwise_accuracy_counts_ties_as_chance():
    r = jnp.zeros(4)
    assert float(losses.pairwise_accuracy(r, r, jnp.array([1.0, 0.0, 1.0, 0.0]))) == 0.5


def test_train_pairwise_accuracy_counts_label_ties_half():
    rng = np.random.default_rng(0)
    r1 = rng.normal(size=64).astype(np.float32)
    r2 = rng.normal(size=64).astype(np.float32)
    r2[:5] = r1[:5]  # score ties
    label = rng.choice([0.0, 1.0, 0.5, 0.8, 0.2], size=64).astype(np.float32)
    got = losses.pairwise_accuracy(jnp.array(r1), jnp.array(r2), jnp.array(label))
    ref = _reference_agreement(r1 - r2, label).mean()
    assert float(got) == pytest.approx(ref, abs=1e-6)
    # RM prefers response1 on every pair: a tie label is half, not "response2 was right".
    ones = jnp.ones(4)
    assert float(losses.pairwise_accuracy(ones, 0 * ones, jnp.full(4, 0.5))) == 0.5

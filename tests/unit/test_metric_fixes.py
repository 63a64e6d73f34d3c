"""Issue 20 fixes (f)-(h): on-policy-only RL settings, label ties (0.5) count one half in
alignment and RM accuracy, and the length-controlled win rate is fitted per comparison."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from rlaif_jax import reward
from rlaif_jax.decoding import score
from rlaif_jax.evaluation import stage
from rlaif_jax.labeling import alignment
from rlaif_jax.rates import per_prompt_mean
from rlaif_jax.rl.runner import RLSettings
from rlaif_jax.train import losses

# --- (f) updates_per_batch > 1 is refused -----------------------------------------------


def test_rl_settings_refuse_off_policy_updates():
    assert RLSettings(updates_per_batch=1).updates_per_batch == 1
    for bad in (2, 4, 0):
        with pytest.raises(ValueError, match=r"RLSettings\.updates_per_batch.*importance ratio"):
            RLSettings(updates_per_batch=bad)


# --- (g) a human label of exactly 0.5 counts one half -----------------------------------


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


def test_labeler_alignment_counts_label_ties_half():
    p_ai = np.array([0.8, 0.3, 0.6, 0.5, 0.1, 0.9, 0.2, 0.5, 0.7])
    human = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 1.0])
    got = alignment.labeler_alignment(p_ai, human)
    ref = _reference_agreement(p_ai - 0.5, human)
    assert got.value == pytest.approx(ref.mean())
    # A label tie is half whatever the AI says (before the fix: 0 for p > 0.5, 1 for p < 0.5).
    assert alignment.labeler_alignment([0.9, 0.1], [0.5, 0.5]).value == pytest.approx(0.5)
    assert alignment.labeler_alignment([0.9, 0.9], [0.5, 0.5]).value == pytest.approx(0.5)


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


# --- (h) the length-controlled win rate is fitted per comparison -------------------------


def _reference_lc(ratio, y):
    def nll(w):
        z = w[0] + w[1] * ratio
        return np.sum(np.logaddexp(0, z) - y * z)

    w = optimize.minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    return 1 / (1 + np.exp(-(w[0] + w[1])))


def test_judge_pairs_fits_length_control_per_comparison():
    """k = 2 samples per prompt whose lengths differ within a prompt: the fit is on the
    N·k per-sample rows (each judgement's own length ratio), not on per-prompt means; the
    plain win rate keeps per-prompt means (n = prompts)."""
    rng = np.random.default_rng(2)
    num_prompts, k = 150, 2
    total = num_prompts * k
    len_b = rng.integers(40, 120, size=total)
    # Within each prompt one sample of A is much longer than the other.
    scale = np.where(
        np.arange(total) % 2 == 0, rng.uniform(0.6, 1.0, total), rng.uniform(1.2, 2.2, total)
    )
    len_a = np.maximum((len_b * scale).astype(int), 1)
    ratio = len_a / len_b
    p_true = 1 / (1 + np.exp(-(-2.0 + 2.3 * ratio)))
    wins = rng.random(total) < p_true
    responses = {"a": ["x" * int(n) for n in len_a], "b": ["y" * int(n) for n in len_b]}

    def judge_fn(judged, texts_a, texts_b):
        assert texts_a == responses["a"] and texts_b == responses["b"]
        return np.where(wins, 0.9, 0.1)

    (row,) = stage.judge_pairs(
        judge_fn, "ai", [{}] * num_prompts, responses, [("a", "b")], num_prompts
    )
    y = wins.astype(float)
    lc = row["length_controlled"]
    assert lc["value"] == pytest.approx(_reference_lc(ratio, y), abs=1e-5)
    assert lc["n"] == total  # the fit's rows are comparisons
    per_prompt = _reference_lc(
        per_prompt_mean(len_a, num_prompts) / per_prompt_mean(len_b, num_prompts),
        per_prompt_mean(y, num_prompts),
    )
    assert abs(per_prompt - lc["value"]) > 1e-3  # the old per-prompt fit reads differently
    assert row["rate"]["value"] == pytest.approx(y.mean())
    assert row["rate"]["n"] == num_prompts  # the plain rate's interval counts prompts

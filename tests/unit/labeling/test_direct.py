"""labeling/direct.py: d-RLAIF — the expected score and its rescaling against NumPy, the
two-piece "10" chain rule, DirectScorer over a rigged model, and over-long contexts that
lose their middle (the harmless judge's too)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from rlaif_jax.evaluation.harmless import HarmlessJudge, HarmlessJudgeSettings
from rlaif_jax.labeling import direct, tokens
from tests.unit.labeling._helpers import (
    HEAD,
    LONG_POST,
    AlwaysFirst,
    CharVocab,
    RiggedScorer,
    direct_q,
)


def test_expected_score_and_rescale():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(12), size=20)[:, :10]  # mass outside the 10 is dropped
    s = direct.expected_score(np.log(probs))
    ref = [sum((i + 1) * q[i] for i in range(10)) / q.sum() for q in probs]
    np.testing.assert_allclose(s, ref, atol=1e-10)
    np.testing.assert_allclose(direct.rescale(np.array([1.0, 5.5, 10.0])), [-1.0, 0.0, 1.0])
    onehot = np.full((1, 10), -1e9)
    onehot[0, 6] = 0.0
    assert direct.expected_score(onehot)[0] == pytest.approx(7.0)


def test_two_piece_ten_chain_rule():
    p = np.array([[0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.2]])  # col 9 = P("1") again
    p[0, 9] = p[0, 0]
    p_zero = 0.25  # P("0" | ... "1")
    lp = direct.two_piece_ten(np.log(p), np.log([p_zero]))
    q = np.exp(lp[0])
    assert q[9] == pytest.approx(0.2 * 0.25) and q[0] == pytest.approx(0.2 * 0.75)
    np.testing.assert_allclose(q[1:9], p[0, 1:9])


@pytest.mark.parametrize("ten", [True, False], ids=["ten_one_piece", "ten_two_pieces"])
def test_direct_scorer_expected_score(ten):
    vocab = CharVocab(ten=ten)
    ds = direct.DirectScorer(RiggedScorer(vocab), vocab)
    assert bool(ds.candidates.multi) == (not ten)
    rewards = ds(["post a", "post b", "post c"], ["x", "good x", "good good good x"])
    scores = ds.expected_scores(["post a", "post b", "post c"], ["x", "good x", "good good good x"])
    assert rewards.dtype == np.float32 and rewards.shape == (3,)
    assert scores[0] < scores[1] < scores[2] and 1 <= scores.min() and scores.max() <= 10
    np.testing.assert_allclose(rewards, (scores - 5.5) / 4.5, rtol=1e-6)
    # NumPy reference: Σ i·q_i / Σ q_i of the stub's true score distribution, also when
    # "10" is read as "1" then "0" (chain rule).
    for s, target in zip(scores, (1, 4, 10)):
        q = direct_q(target)
        assert s == pytest.approx((q * np.arange(1, 11)).sum() / q.sum(), rel=1e-5)
    with (
        pytest.raises(Exception, match="not a single token")
        if not ten
        else contextlib.nullcontext()
    ):
        direct.DirectScorer(RiggedScorer(vocab), vocab, ten_mode="error")


def test_direct_scorer_and_harmless_judge_trim_the_context_middle():
    vocab = CharVocab(ten=True)
    scorer = AlwaysFirst(vocab)
    ds = direct.DirectScorer(scorer, vocab, max_len=500)
    ds([LONG_POST], ["a summary"])
    (text,) = scorer.texts
    assert len(vocab.encode(text)) <= 500 and HEAD in text and text.endswith("SCORE: ")
    assert "SUMMARY: a summary" in text and tokens.ELISION in text

    dialogue = "Human: hi\n\nAssistant: hello\n\n" + "Human: more words here\n\n" * 40
    dialogue += "Human: how do I pick a lock?"
    whole = len(vocab.encode(HarmlessJudge(scorer, vocab).prompt(dialogue, "no").text))
    settings = HarmlessJudgeSettings(max_len=whole - 600)  # room for ~400 context chars
    judge = HarmlessJudge(AlwaysFirst(vocab), vocab, settings)
    judge.p_harmless([dialogue], ["I can't help with that."])
    (text,) = judge.scorer.texts
    assert judge.truncated == 1 and len(vocab.encode(text)) <= settings.max_len
    assert "Context - Human: hi\n\nAssistant: hello" in text
    assert "Human: how do I pick a lock?\nResponse - I can't help with that." in text

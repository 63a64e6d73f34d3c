"""labeling/labeler.py: the labeler procedure with a rigged model — both orders in one
call, position bias removed by averaging, CoT two-step, self-consistency, harmless
inversion, the task's judge prompt, and over-long contexts that lose their middle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlaif_jax.labeling import debias, render, tokens
from rlaif_jax.labeling import prompts as P
from rlaif_jax.labeling.labeler import Labeler, LabelerSettings
from tests.unit.labeling._helpers import (
    CTX,
    HEAD,
    LONG_POST,
    R1,
    R2,
    AlwaysFirst,
    CharVocab,
    IdVocab,
    RecordingScorer,
    RiggedScorer,
    pairs,
    quality,
)


def test_position_bias_removed_by_averaging_orders():
    vocab = CharVocab()
    scorer = RiggedScorer(vocab, position_bias=1.5)
    lab = Labeler(
        scorer, vocab, render.PromptVariant("summarize", "base"), LabelerSettings(pairs_per_call=4)
    )
    data = pairs(24)
    recs = lab.label(data)
    assert [r["id"] for r in recs] == [p["id"] for p in data]
    # Both orders of every pair travel in the same call: 2 x pairs_per_call prompts.
    assert scorer.calls == [8] * 6
    for p, r in zip(data, recs):
        d = quality(p["response1"]) - quality(p["response2"])
        s = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
        assert r["p_order1"] == pytest.approx(s(d + 1.5))  # P₁("1")
        assert r["p_order2"] == pytest.approx(s(d - 1.5))  # P₂("2") = 1 - s(-d + 1.5)
        # The bias cancels exactly for ties; the soft label keeps the content's direction.
        assert r["label"] == pytest.approx(0.5 * (s(d + 1.5) + s(d - 1.5)))
        if d == 0:
            assert r["label"] == pytest.approx(0.5) and r["p_order1"] > 0.8
        else:
            assert (r["label"] > 0.5) == (d > 0)
        assert r["human_label"] == p["label"] and r["rationale"] == ""
    same = debias.same_position_preferred(
        np.array([r["p_order1"] for r in recs]), np.array([r["p_order2"] for r in recs])
    )
    assert same.mean() > 0.3  # the biased labeler often picks the first shown


def test_harmless_labels_inverted():
    vocab = CharVocab()
    data = pairs(6)
    harm = Labeler(
        RiggedScorer(vocab),
        vocab,
        render.PromptVariant("harmless", num_shots=2),
        LabelerSettings(max_len=4096),
    ).label(data)
    help_ = Labeler(RiggedScorer(vocab), vocab, render.PromptVariant("helpful")).label(data)
    for h, g in zip(harm, help_):
        # Same rigged answers; the harmless prompt's answer means "more harmful".
        assert h["label"] == pytest.approx(1 - g["label"])
        assert h["p_order1"] == pytest.approx(1 - g["p_order1"])


def test_cot_two_step_greedy():
    vocab = CharVocab()
    scorer = RiggedScorer(vocab, position_bias=3.0)
    v = render.PromptVariant("summarize", "detailed", cot=True)
    lab = Labeler(
        scorer, vocab, v, LabelerSettings(pairs_per_call=8, cot_max_tokens=64, max_len=4096)
    )
    data = [p for p in pairs(12) if p["label"] != 0.5]
    recs = lab.label(data)
    assert scorer.gen_calls[0][1:] == (0.0, 0, 1)  # greedy, one rationale
    for p, r in zip(data, recs):
        # The stub follows its (correct) rationale in both orders: bias gone entirely.
        want = 1 / (1 + math.exp(-2.0))
        assert r["label"] == pytest.approx(want if p["label"] == 1.0 else 1 - want)
        # The rationale is cut before the answer the model wrote itself.
        assert r["rationale"].startswith("Summary") and "Preferred" not in r["rationale"]


def test_self_consistency_averages_debiased_samples():
    vocab = CharVocab()
    scorer = RiggedScorer(vocab)
    s = LabelerSettings(pairs_per_call=4, num_samples=5, temperature=0.7)
    lab = Labeler(scorer, vocab, render.PromptVariant("summarize", "base", cot=True), s)
    data = [p for p in pairs(8, seed=3) if p["label"] != 0.5]
    recs = lab.label(data, seed=11)
    assert scorer.gen_calls[0][1:] == (0.7, P.SELF_CONSISTENCY_TOP_K, 5)
    # NumPy reference: regenerate the same rationales and average per-sample labels.
    ref_scorer = RiggedScorer(vocab)
    lab2 = Labeler(ref_scorer, vocab, render.PromptVariant("summarize", "base", cot=True), s)
    again = lab2.label(data, seed=11)
    assert [r["label"] for r in recs] == [r["label"] for r in again]  # seeded
    sig = 1 / (1 + math.exp(-2.0))
    for r in recs:
        # each sample's debiased p is sig or 1 - sig per order -> mean of 2S values
        k = round((r["label"] - (1 - sig)) / (2 * sig - 1) * 10)
        assert r["label"] == pytest.approx((1 - sig) + k / 10 * (2 * sig - 1))
    with pytest.raises(ValueError, match="temperature"):
        LabelerSettings(num_samples=4, temperature=0.0)


@pytest.mark.parametrize("task", P.TASKS)
@pytest.mark.parametrize("cot", [False, True])
def test_labeler_judge_prompt_is_the_tasks(task, cot):
    v = IdVocab()
    scorer = RecordingScorer(v)
    pair = {"id": "a", "context": CTX, "response1": R1, "response2": R2}
    # A variant left to the data's task (None) takes the Labeler's task.
    lab = Labeler(scorer, v, render.PromptVariant(None, cot=cot), task=task)
    (rec,) = lab.label([pair])
    assert len(scorer.texts) == 2  # both orders
    first, second = scorer.texts
    if task == "summarize":
        assert f"Text - {CTX}\nSummary 1 - {R1}\nSummary 2 - {R2}\n" in first
        assert first.endswith("Preferred Summary=")
    else:
        assert "Summary" not in first and "summary" not in first
        assert f"Context - {CTX}\nResponse 1 - {R1}\nResponse 2 - {R2}\n" in first
        assert f"Response 1 - {R2}\nResponse 2 - {R1}\n" in second
        assert first.endswith("Preferred Response=")
        assert first.startswith(P.PREAMBLES[task]["base"][1 if cot else 0])
    if cot:
        assert "\nRationale: Response 1 is better.\nPreferred" in first
    # Fixed answers P("2") = 2/3 in both orders: debiased 1/2, inverted for harmless too.
    assert rec["p_order1"] == pytest.approx(1 / 3 if task != "harmless" else 2 / 3)
    with pytest.raises(ValueError, match="task=None"):
        Labeler(scorer, v, render.PromptVariant(None))


def test_over_long_post_keeps_header_title_summaries_and_ending():
    vocab = CharVocab()
    scorer, max_len = AlwaysFirst(vocab), 700
    lab = Labeler(
        scorer, vocab, render.PromptVariant("summarize"), LabelerSettings(max_len=max_len)
    )
    pair = {"id": "x", "context": LONG_POST, "response1": "friend forgot", "response2": "sad"}
    lab.label([pair])
    assert lab.truncated == 2 and len(scorer.texts) == 2
    for text, (a, b) in zip(scorer.texts, [("friend forgot", "sad"), ("sad", "friend forgot")]):
        assert len(vocab.encode(text)) <= max_len
        assert f"Text - {HEAD}\nPOST: we used to talk" in text
        assert tokens.ELISION in text and "what should I do now?\n" in text
        assert text.endswith(f"Summary 1 - {a}\nSummary 2 - {b}\nPreferred Summary=")
        assert len(vocab.encode(text)) > max_len - 40  # trimmed no more than needed
    short = Labeler(AlwaysFirst(vocab), vocab, render.PromptVariant("summarize"))
    short.label([pair])  # the paper's 4096 default: nothing cut
    assert short.truncated == 0 and LONG_POST in short.scorer.texts[0]

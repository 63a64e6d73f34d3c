"""Issue 20 labeling fixes: (a) position-bias metrics read the position the labeler
picked on an inverted (harmless) prompt, (c) a two-piece "10" must start with the very
token of "1", (d) over-long prompts lose the middle of their context, not their start."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlaif_jax.evaluation.harmless import HarmlessJudge, HarmlessJudgeSettings
from rlaif_jax.labeling import alignment, direct, render, stage, tokens
from rlaif_jax.labeling.labeler import Labeler, LabelerSettings
from tests.unit.test_labeler import CharVocab
from tests.unit.test_labeling_tokens import MergingVocab


class AlwaysFirst:
    """A PromptScorer that answers the first candidate ("1") with P = 0.9 whatever it
    reads; records every scored prompt text."""

    def __init__(self, vocab):
        self.vocab, self.texts = vocab, []

    def score(self, prefix, suffixes, candidate_ids):
        for s in suffixes:
            self.texts.append(self.vocab.decode(list(prefix) + list(s)))
        row = [math.log(0.9)] + [math.log(0.1 / (len(candidate_ids) - 1))] * (
            len(candidate_ids) - 1
        )
        return np.array([row] * len(suffixes))

    def generate(self, *a, **k):  # no CoT in these tests
        raise AssertionError("generate is not used")


def dialogue_pairs(n):
    return [
        {
            "id": f"d{i}",
            "context": f"Human: question {i}?",
            "response1": f"answer a{i}",
            "response2": f"answer b{i}",
            "label": float(i % 2),
        }
        for i in range(n)
    ]


# (a) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["helpful", "harmless"])
def test_always_answering_one_favours_the_first_position_on_every_task(task, tmp_path):
    vocab = CharVocab()
    metrics = stage.run_stage(
        workdir=str(tmp_path),
        variant=render.PromptVariant(task),
        labeler_fn=lambda wd, mesh, rules: (AlwaysFirst(vocab), vocab),
        pairs=dialogue_pairs(6),
        settings=LabelerSettings(pairs_per_call=4, max_len=256),
        shard_size=4,
    )
    assert metrics["position_bias_same_position_rate"] == pytest.approx(1.0)
    assert metrics["position_bias_favour_first"] == pytest.approx(1.0)
    # The records stay preferences: harmless "1 is more harmful" -> response1 dispreferred.
    rec = stage.read_records(str(tmp_path / "labels"))[0]
    assert rec["p_order1"] == pytest.approx(0.1 if task == "harmless" else 0.9)


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


# (c) ----------------------------------------------------------------------------------


class SplitTenVocab(CharVocab):
    """Characters, except that "10" is two pieces whose first is NOT the token of "1":
    a piece ONE_OF_TEN (decoding to "1") followed by "0"."""

    ONE_OF_TEN = 99_000

    def encode(self, s):
        out = []
        for i, ch in enumerate(s):
            if ch == "1" and s.startswith("10", i):
                out.append(self.ONE_OF_TEN)
            else:
                out.append(ord(ch) + 3)
        return out

    def decode(self, ids):
        return "".join("1" if i == self.ONE_OF_TEN else chr(i - 3) for i in ids if i >= 3)


def test_two_piece_ten_must_start_with_the_token_of_one():
    v = SplitTenVocab()
    with pytest.raises(tokens.CandidateTokenError, match=r"pieces \['1', '0'\].*99000"):
        direct.DirectScorer(AlwaysFirst(v), v)
    with pytest.raises(tokens.CandidateTokenError, match="first piece"):
        tokens.resolve_candidates(v, "SCORE: ", direct.P.SCORE_CANDIDATES, ("10",))
    # The vocabulary where "10" really is "1","0" still scores by the chain rule.
    ok = tokens.resolve_candidates(CharVocab(), "SCORE: ", direct.P.SCORE_CANDIDATES, ("10",))
    assert dict(ok.multi) == {9: (ok.ids[0], ord("0") + 3)}


# (d) ----------------------------------------------------------------------------------

HEAD = "SUBREDDIT: r/relationships\nTITLE: My best friend forgot my birthday"
LONG_POST = HEAD + "\nPOST: " + "we used to talk every day and " * 60 + "what should I do now?"


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


def test_prompts_that_fit_tokenize_exactly_as_before():
    v = MergingVocab()
    prefix, ctx = "Rate this.\n", "a post about cats"

    def rendered(c):
        return render.RenderedPrompt(prefix, f"Text - {c}\nEnd=", "End=", f"Text - {c}")

    for bos in (False, True):
        want = tokens.tokenize_prompt(v, prefix, f"Text - {ctx}\nEnd=", (7,), 256, bos)
        got = tokens.tokenize_to_fit(v, rendered, ctx, (7,), 256, bos)
        assert got == want and not got.truncated
    with pytest.raises(ValueError, match="shared prompt prefix"):
        tokens.tokenize_to_fit(v, rendered, ctx * 20, (), len(prefix) + 4)


def test_elide_middle_cuts_at_word_boundaries():
    text = "alpha beta gamma delta epsilon zeta"
    assert tokens.elide_middle(text, 100) == text
    out = tokens.elide_middle(text, 16)
    assert out.startswith("alpha") and out.endswith("zeta") and tokens.ELISION in out
    assert all(w in text.split() for w in out.replace(tokens.ELISION, " ").split())
    assert tokens.elide_middle(text, 0) == tokens.ELISION.strip()

"""toy/bootstrap_data.py: the labeler's bootstrap examples are the prompts it reads at
inference, with hard and soft targets."""

from __future__ import annotations

import pytest

from rlaif_jax.labeling import render
from tests.unit.labeling._helpers import CharVocab


def test_bootstrap_examples_match_inference_layout():
    from rlaif_jax.labeling import tokens
    from rlaif_jax.toy import bootstrap_data

    vocab = CharVocab(ten=True)
    v = render.PromptVariant("summarize", "base")
    corpus = [
        {"context": "c", "response1": "a", "response2": "b", "label": 0.0},
        {"context": "c", "response1": "a", "response2": "b", "label": 0.5},  # tie: skipped
    ]
    (ex,) = bootstrap_data.preference_examples(corpus, vocab, [v], max_len=4096)
    r = render.render_preference(v, "c", "a", "b")
    t = tokens.tokenize_prompt(vocab, r.prefix, r.suffix)
    # What the labeler reads at inference is exactly the training prompt; target "2".
    assert ex.ids[: ex.target_start] == t.prefix + t.suffix
    assert vocab.decode(ex.ids[ex.target_start :]) == "2"
    (d,) = bootstrap_data.direct_examples([("c", "a", 10)], vocab, render.DirectPrompt(), 4096)
    assert vocab.decode(d.ids).endswith("SCORE: 10") and d.ids[-1] == CharVocab.TEN
    batch = bootstrap_data.to_batch([ex, d], 2048, vocab.pad_id)
    assert batch["loss_mask"].sum() == 2 and batch["loss_mask"][0, ex.target_start] == 1
    assert not batch["alt_weight"].any()
    # Soft targets: the likelier answer is the token, the other one the alternative.
    soft_rows = [dict(corpus[0], label=0.2), dict(corpus[0], label=0.9)]
    s2, s1 = bootstrap_data.preference_examples(soft_rows, vocab, [v], 4096, soft=True)
    assert vocab.decode(s2.ids[-1:]) == "2" and vocab.decode([s2.alt_id]) == "1"
    assert vocab.decode(s1.ids[-1:]) == "1" and vocab.decode([s1.alt_id]) == "2"
    assert (s2.alt_weight, s1.alt_weight) == pytest.approx((0.2, 0.1))
    batch = bootstrap_data.to_batch([s2, s1], 2048, vocab.pad_id)
    assert batch["alt_weight"][0, len(s2.ids) - 1] == pytest.approx(0.2)
    assert batch["alt_tokens"][1, len(s1.ids) - 1] == s1.alt_id
    assert batch["alt_weight"].sum() == pytest.approx(0.3)

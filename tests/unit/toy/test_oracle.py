"""toy/oracle.py: the oracle against corrupted summaries and garbage, the human rater's
self-agreement, the bootstrap rater's blind spots and position bias, world statistics."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rlaif_jax.toy.oracle import (
    BootstrapRater,
    HumanRater,
    judge,
    oracle_prefers,
    oracle_score,
    world_statistics,
)
from rlaif_jax.toy.text import (
    ALL_WORDS,
    OBJECTS,
    SUBJECTS,
    ContextError,
    make_post,
    parse_context,
    parse_summary,
    render_summary,
)


def _corruptions(post, rng: random.Random) -> dict[str, str]:
    key, side = list(post.key_facts), list(post.side_facts)
    s, v, o = key[0]
    wrong_obj = next(x for x in OBJECTS if x not in {f[2] for f in post.facts})
    wrong_subj = next(x for x in SUBJECTS if x not in {f[0] for f in post.facts})
    return {
        "missing_key": render_summary(key[1:]),
        "side_fact": render_summary(key + [side[0]]),
        "invented_object": render_summary([(s, v, wrong_obj)] + key[1:]),
        "invented_extra": render_summary(key + [(s, v, wrong_obj)]),
        "mixed_up_person": render_summary([(wrong_subj, v, o)] + key[1:]),
        "mixed_up_person_extra": render_summary(key + [(wrong_subj, v, o)]),
        "repeated": render_summary(key + [key[-1]]),
        "truncated": render_summary(key)[: -len(" .")],
        "truncated_object": render_summary(key)[: -len(f" {key[-1][2]} .")],
        "word_salad_tail": render_summary(key) + " my the again",
        "reordered_words": render_summary(key[:-1]) + f" {key[-1][1]} {key[-1][0]} {key[-1][2]} .",
    }


def test_oracle_prefers_perfect_summary_over_each_corruption():
    rng = random.Random(0)
    for _ in range(300):
        post = make_post(rng)
        perfect = render_summary(post.key_facts)
        assert oracle_score(post.context, perfect) == pytest.approx(1.0)
        assert parse_context(post.context) == (post.main_subject, post.facts)
        for name, bad in _corruptions(post, rng).items():
            q = oracle_score(post.context, bad)
            assert q < 1.0, (name, bad)
            assert oracle_prefers(post.context, perfect, bad) > 0.5, name
    j = judge(post.context, render_summary(post.key_facts + post.key_facts[:1]))
    assert (j.key_covered, j.repeated, j.invented, j.broken) == (len(post.key_facts), 1, 0, 0)


def test_oracle_parses_garbage_and_scores_it_low(world):
    ctx = world.eval_prompts()[0]["context"]
    rng = random.Random(0)
    salad = " ".join(rng.choice(ALL_WORDS) for _ in range(60))
    garbage = [
        "",
        " . . . . ",
        "\x00\ufffd\u200b ☃ 🤖",
        "the the the the the the the the the the",
        "TL;DR: " * 50,
        salad,
        " ".join(["landlord"] * 500),
        "12345 " * 30 + "<pad> </s>",
        ctx,  # copying the whole post
    ]
    ref_mean = np.mean(
        [oracle_score(r["context"], r["response"]) for r in world.sft_examples("test")]
    )
    for g in garbage:
        q = oracle_score(ctx, g)
        assert np.isfinite(q) and q <= 0.0, (g[:40], q)
        assert q < ref_mean
    assert oracle_score(ctx, salad) < -0.5 and oracle_score(ctx, ctx) < -0.5
    assert parse_summary("cat lost keys.cat lost keys").facts == (("cat", "lost", "keys"),)
    with pytest.raises(ContextError):
        oracle_score("Human: hi\n\nAssistant:", "cat lost keys .")
    with pytest.raises(ValueError):
        oracle_score("SUBREDDIT: r/x\nTITLE: my cat\nPOST: nothing here .", "cat lost keys .")


def test_oracle_prefers_is_a_fair_probability(world):
    r = world.human_preferences()[0]
    c, a, b = r["context"], r["response1"], r["response2"]
    assert oracle_prefers(c, a, a) == 0.5
    assert oracle_prefers(c, a, b) + oracle_prefers(c, b, a) == pytest.approx(1.0)
    assert (oracle_prefers(c, a, b) > 0.5) == (oracle_score(c, a) > oracle_score(c, b))


def test_human_self_agreement_in_band(world):
    stats = world_statistics(world)
    assert 0.70 <= stats["human_self_agreement_requeried"] <= 0.80
    assert 0.70 <= stats["human_self_agreement_expected"] <= 0.80
    # The human follows the oracle, better when confident (paper: confidence 1/2/8/9).
    assert 0.75 < stats["human_oracle_agreement"] < stats["human_oracle_agreement_high_confidence"]
    assert 0.25 < stats["human_high_confidence_fraction"] < 0.75
    # Repeated queries of one pair at the rater level: the BT probability.
    human, rng = HumanRater(), random.Random(0)
    votes = [human.sample(0.8, 0.5, rng)[0] for _ in range(4000)]
    assert abs(np.mean(votes) - human.prob(0.8, 0.5)) < 0.03


def test_bootstrap_rater_blind_spots_and_position_bias():
    rater, rng = BootstrapRater(), random.Random(0)
    blind_wins = tie_first = clear_right = n = 0
    for _ in range(300):
        post = make_post(rng)
        main, facts = post.main_subject, post.facts
        perfect = render_summary(post.key_facts)
        c = _corruptions(post, rng)
        for bad in (c["invented_extra"], c["mixed_up_person_extra"]):
            # Blind: equal quality for the rater, strictly worse for the oracle.
            assert rater.quality(main, facts, bad) == rater.quality(main, facts, perfect)
            assert oracle_score(post.context, bad) < 1.0
        for bad in (c["repeated"], c["side_fact"], c["truncated"], c["missing_key"]):
            assert rater.quality(main, facts, bad) < rater.quality(main, facts, perfect)
        # Near tie with the corrupted summary shown first: the rater takes position 1.
        blind_wins += rater.sample(rater.quality(main, facts, c["invented_extra"]), 1.0, rng)[0]
        tie_first += rater.sample(1.0, 1.0, rng)[0]
        # A clear difference (a broken, incomplete summary) beats the bias.
        worse = rater.quality(main, facts, c["truncated_object"])
        clear_right += 1.0 - rater.sample(worse, 1.0, rng)[0]
        n += 1
    assert blind_wins / n > 0.75 and tie_first / n > 0.75
    assert clear_right / n > 0.8
    assert rater.prob_first(0.5, 0.5) == pytest.approx(1 / (1 + np.exp(-rater.position_bias)))


def test_bootstrap_rater_invented_penalty_partly_opens_the_blind_spot():
    rng = random.Random(3)
    seeing = BootstrapRater(invented_penalty=0.15)
    for _ in range(50):
        post = make_post(rng)
        c = _corruptions(post, rng)
        perfect = render_summary(post.key_facts)
        main, facts = post.main_subject, post.facts
        assert seeing.quality(main, facts, c["invented_extra"]) == pytest.approx(
            seeing.quality(main, facts, perfect) - 0.15
        )
        blind = BootstrapRater()
        assert blind.quality(main, facts, c["invented_extra"]) == blind.quality(
            main, facts, perfect
        )
        rationale = seeing.rationale(post.main_subject, post.facts, c["invented_extra"], perfect, 2)
        assert "summary 1 covers" in rationale and "invents 1 facts" in rationale


def test_bootstrap_alignment_above_chance_below_perfect_and_debiasing_helps(world):
    s = world_statistics(world)
    for k in ("", "_high_confidence"):
        single = s[f"bootstrap_human_agreement{k}_single_order"]
        both = s[f"bootstrap_human_agreement{k}_both_orders"]
        assert 0.6 <= single < both < 0.95, (k, single, both)
    assert s["bootstrap_oracle_agreement_both_orders"] < 0.95
    assert 0.15 < s["bootstrap_same_position_rate"] < 0.8
    # Headroom: the good generator and the perfect summary beat the SFT references.
    q = s["oracle_score_mean"]
    assert q["reference"] + 0.2 < q["good"] < q["perfect"]
    assert q["hallucinating"] < q["reference"]

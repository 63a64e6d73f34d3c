"""toy/summaries.py: the generators' errors are visible from summary words (invented
facts use phantom objects, looping repeats), and one-fact edits and insertions change
content, not length."""

from __future__ import annotations

import random

import numpy as np

from rlaif_jax.toy.oracle import BootstrapRater, judge, oracle_score
from rlaif_jax.toy.summaries import (
    EDIT_KINDS,
    PROFILES,
    edited_facts,
    generate_summary,
    summary_facts,
)
from rlaif_jax.toy.text import (
    MAIN_SUBJECTS,
    PHANTOM_OBJECTS,
    SIDE_OBJECTS,
    SIDE_SUBJECTS,
    VERB_OF,
    make_post,
    parse_summary,
    render_summary,
)


def test_errors_are_visible_from_summary_tokens():
    """Design for tiny models: side facts are about bystanders who never title a post, and
    most invented facts use an object that no post mentions."""
    rng = random.Random(3)
    invented = phantom = 0
    for _ in range(400):
        post = make_post(rng)
        assert post.main_subject in MAIN_SUBJECTS
        assert all(f[0] in SIDE_SUBJECTS for f in post.side_facts) and post.side_facts
        words = set(post.context.split())
        assert not words & set(PHANTOM_OBJECTS) and not words & set(SIDE_SUBJECTS) - {
            f[0] for f in post.side_facts
        }
        j_text = generate_summary(post, "hallucinating", rng)
        for f in parse_summary(j_text).facts:
            if f not in post.facts:
                invented += 1
                phantom += f[2] in PHANTOM_OBJECTS
    assert invented > 200 and 0.7 < phantom / invented < 0.95


def test_edited_facts_change_content_not_length():
    rng = random.Random(4)
    kinds = set()
    for _ in range(300):
        post = make_post(rng)
        facts = summary_facts(post, PROFILES["good"], rng)
        edited, kind = edited_facts(post, facts, rng)
        kinds.add(kind)
        assert len(edited) == len(facts) and sum(a != b for a, b in zip(facts, edited)) == 1
        before, after = (oracle_score(post.context, render_summary(f)) for f in (facts, edited))
        # Taking a stated key fact away always costs; restoring a missing one always helps.
        assert (after > before) if kind == "key" else (after < before)
    assert kinds >= set(EDIT_KINDS)


def test_insertions_add_or_remove_one_sentence_and_length_does_not_decide():
    rng = random.Random(5)
    kinds, longer_better = set(), []
    seeing = BootstrapRater(invented_penalty=0.5)
    for _ in range(400):
        post = make_post(rng)
        facts = summary_facts(post, PROFILES[rng.choice(["good", "lazy", "chatty"])], rng)
        edited, kind = edited_facts(post, facts, rng, insert=True)
        kinds.add(kind)
        assert len(edited) == len(facts) + (-1 if kind == "-key" else 1)
        before, after = (judge(post.context, render_summary(f)) for f in (facts, edited))
        qb = [
            seeing.quality(post.main_subject, post.facts, render_summary(f))
            for f in (facts, edited)
        ]
        if kind in ("+key", "-key"):
            assert after.key_covered == before.key_covered + (1 if kind == "+key" else -1)
            assert (after.score > before.score) == (kind == "+key") and (qb[1] > qb[0]) == (
                kind == "+key"
            )
        else:
            errors = [j.side + j.invented + j.repeated for j in (before, after)]
            assert after.key_covered == before.key_covered and errors[1] == errors[0] + 1
            assert after.score < before.score and qb[1] < qb[0]  # the rater sees it too
        longer_better.append((len(edited) > len(facts)) == (after.score > before.score))
    assert kinds == {"+key", "-key"} | {"+" + k for k in EDIT_KINDS}
    assert 0.35 < np.mean(longer_better) < 0.65


def test_looping_generator_repeats_and_every_error_is_word_visible():
    rng = random.Random(5)
    repeats = []
    for _ in range(300):
        post = make_post(rng)
        assert all(f[1] == VERB_OF[f[2]] for f in post.facts)
        assert {f[2] for f in post.side_facts} <= set(SIDE_OBJECTS)
        assert not {f[2] for f in post.key_facts} & set(SIDE_OBJECTS)
        repeats.append(judge(post.context, generate_summary(post, "looping", rng)).repeated)
    assert np.mean(repeats) > 1.0 and max(repeats) >= 3

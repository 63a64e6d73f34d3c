"""toy/rating_corpus.py: contrastive one-edit pairs decouple length from the rater; the
corpus shows the rater's position bias, in both orders and with soft labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rlaif_jax.toy.text import parse_summary
from rlaif_jax.toy.world import ToyWorld, ToyWorldConfig
from tests.unit.toy._helpers import SMALL


def test_contrastive_rating_pairs_decouple_length_from_the_rater():
    world = ToyWorld(
        ToyWorldConfig(**{**SMALL, "num_rating_corpus": 400}, rating_edit_fraction=1.0)
    )
    recs, infos = world._pairs("rating", 400)
    edits = [i for i in infos if any("+" in g for g in i.generators)]
    assert len(edits) > 350  # a few edits restate a sentence and fall back to generators
    same_length = [
        len(parse_summary(r["response1"]).facts) == len(parse_summary(r["response2"]).facts)
        for r, i in zip(recs, infos)
        if i in edits
    ]
    assert np.mean(same_length) > 0.95
    plain = ToyWorld(ToyWorldConfig(**SMALL))._pairs("rating", 80)[1]
    assert not any("+" in g for i in plain for g in i.generators)  # off by default
    with pytest.raises(ValueError, match="rating_edit_fraction"):
        ToyWorldConfig(rating_edit_fraction=1.5)
    inserts = ToyWorld(
        ToyWorldConfig(
            **{**SMALL, "num_rating_corpus": 200}, rating_edit_fraction=1.0, rating_insert_share=1.0
        )
    )._pairs("rating", 200)[1]
    # Generator names: 'good+side' for a swap, 'good++side' for an insertion.
    assert sum(any("++" in g for g in i.generators) for i in inserts) > 150
    assert not any("++" in g for i in edits for g in i.generators)  # swaps only by default


def test_rating_corpus_shows_position_bias(world):
    recs = world.rating_corpus()
    infos = world.pair_infos("rating")
    near = [r["label"] for r, i in zip(recs, infos) if abs(i.rater[0] - i.rater[1]) < 0.1]
    assert len(near) > 200 and np.mean(near) > 0.75  # first-shown preferred on near-ties
    far = [
        r["label"] == float(i.rater[0] > i.rater[1])
        for r, i in zip(recs, infos)
        if abs(i.rater[0] - i.rater[1]) >= 0.5
    ]
    assert np.mean(far) > 0.85
    scores = world.rating_scores()
    assert len(scores) == 2 * len(recs) and all(1 <= s <= 10 for _, _, s in scores)
    row = recs[0]
    rat = world.rating_rationale(row, 2)
    assert rat.startswith("summary 1 covers ") and rat.endswith("summary 2 is better .")


def test_soft_rating_corpus_carries_the_raters_probability(world):
    hard, soft = world.rating_corpus(both_orders=True), world.rating_corpus(True, soft=True)
    infos = world._pairs("rating", world.config.num_rating_corpus)[1]
    assert [r["id"] for r in hard] == [r["id"] for r in soft]
    for k, info in enumerate(infos[:20]):
        shown, swapped = soft[2 * k], soft[2 * k + 1]
        assert shown["label"] == pytest.approx(world.rater.prob_first(*info.rater))
        assert swapped["label"] == pytest.approx(world.rater.prob_first(*info.rater[::-1]))
        assert 0.0 < shown["label"] < 1.0
    # A noiseless rater's probability is its (deterministic) choice.
    hard_rater = dataclasses.replace(world.rater, noise=0.0)
    assert hard_rater.prob_first(0.5, 0.5) == 1.0 and hard_rater.prob_first(0.0, 0.9) == 0.0


def test_rating_corpus_both_orders_are_two_queries_of_the_rater(world):
    one, both = world.rating_corpus(), world.rating_corpus(both_orders=True)
    assert both[0::2] == one and len(both) == 2 * len(one)
    infos = world.pair_infos("rating")
    first_shown = []
    for rec, swapped, info in zip(one, both[1::2], infos):
        assert swapped["id"] == rec["id"] + "-swapped"
        assert (swapped["response1"], swapped["response2"]) == (rec["response2"], rec["response1"])
        assert swapped["context"] == rec["context"] and (swapped["confidence"] < 5) == (
            swapped["label"] == 1.0
        )
        if abs(info.rater[0] - info.rater[1]) < 1e-9:  # a tie for the rater: only the bias
            first_shown += [rec["label"], swapped["label"]]
    # On the rater's ties both orders mostly pick the first-shown summary (its position
    # bias), so the two labels of a pair disagree about which summary is better.
    assert len(first_shown) > 100 and np.mean(first_shown) > 0.75

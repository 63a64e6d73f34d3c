"""The toy world's generic rating corpus: the data the toy labeler is bootstrapped on.

The corpus is pairs on disjoint posts (the world's 'rating' set) labeled by a *different*
rater than the human (`oracle.BootstrapRater`), with blind spots (does not check
facts against the post, ignores length) and a first-position bias. The toy "off-the-shelf"
labeler is bootstrapped on it (`toy.labeler_bootstrap`), so its alignment with the human is
above chance but imperfect, and position debiasing (both orders) matters. Options
(`ToyWorldConfig`): the rater may dock invented facts (`bootstrap_invented_penalty`), and
a share of the pairs may be contrastive one-edit pairs (`rating_edit_fraction`, built by
`contrastive_texts`: swaps of equal length, or with `rating_insert_share` one sentence more
or less); what they did to the labeler is in docs/toy_labeler.md.

`world.ToyWorld` generates and caches the pairs with the rest of its record sets;
the functions here read them for the bootstrap — as preference rows (`rating_corpus`),
1–10 scores (`rating_scores`) and CoT rationales (`rating_rationale`) — and ToyWorld's
methods of the same names delegate to them.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from rlaif_jax.data import splits
from rlaif_jax.data.splits import Record
from rlaif_jax.toy.summaries import (
    PAIR_GENERATORS,
    PROFILES,
    edited_facts,
    pair_texts,
    summary_facts,
)
from rlaif_jax.toy.text import Post, parse_context, render_summary

if TYPE_CHECKING:
    from rlaif_jax.toy.world import ToyWorld


def contrastive_texts(
    post: Post, rng: random.Random, insert_share: float
) -> tuple[str, str, str, str]:
    """A generator's summary and its one-edit variant (`summaries.edited_facts`: an
    insertion with probability `insert_share`, else a swap), in random order; generator
    names 'g' and 'g+edit'."""
    g = rng.choice(PAIR_GENERATORS)
    facts = summary_facts(post, PROFILES[g], rng)
    insert = insert_share > 0 and rng.random() < insert_share
    edited, kind = edited_facts(post, facts, rng, insert=insert)
    a, b = render_summary(facts), render_summary(edited)
    if a == b:  # the edit restated the same sentence: a plain generator pair instead
        return pair_texts(post, rng)
    pair = [(a, g), (b, f"{g}+{kind}")]
    rng.shuffle(pair)
    return pair[0][0], pair[1][0], pair[0][1], pair[1][1]


def rating_corpus(world: ToyWorld, both_orders: bool = False, soft: bool = False) -> list[Record]:
    """Generic rating corpus (disjoint posts): pairs in shown order, label = 1.0 if the
    bootstrap rater chose response1 (shown first) else 0.0, its confidence 1..9.

    both_orders: each pair is followed by its swapped copy (id suffix '-swapped'),
    labeled by a second, independent query of the rater in that order (so its position
    bias favours the other summary there).
    soft: label = the rater's probability of choosing response1 in the shown order
    (position bias included) instead of one sampled choice; confidence stays sampled.
    """
    recs, infos = world._pairs("rating", world.config.num_rating_corpus)
    out = []
    for i, (rec, info) in enumerate(zip(recs, infos)):
        out.append(dict(rec))
        if soft:
            out[-1]["label"] = world.rater.prob_first(info.rater[0], info.rater[1])
        if both_orders:
            rng = world._rng("rating", i, "swapped")
            label, confidence = world.rater.sample(info.rater[1], info.rater[0], rng)
            if soft:
                label = world.rater.prob_first(info.rater[1], info.rater[0])
            swapped = splits.swap_pair(rec)  # the rater's own answer replaces the flip
            swapped.update(id=rec["id"] + "-swapped", label=label, confidence=confidence)
            out.append(swapped)
    return out


def rating_scores(world: ToyWorld) -> list[tuple[str, str, int]]:
    """(context, summary, 1..10 rating by the bootstrap rater) for each corpus summary:
    the d-RLAIF bootstrap rows (`bootstrap_data.direct_examples`)."""
    recs, infos = world._pairs("rating", world.config.num_rating_corpus)
    out = []
    for i, (rec, info) in enumerate(zip(recs, infos)):
        rng = world._rng("rating", i, "scores")
        for text, qb in ((rec["response1"], info.rater[0]), (rec["response2"], info.rater[1])):
            out.append((rec["context"], text, world.rater.score_1_to_10(qb, rng)))
    return out


def rating_rationale(world: ToyWorld, row: Record, choice: int) -> str:
    """CoT rationale for a corpus `row` concluding `choice` (1 or 2), in the bootstrap
    rater's (blind) words; the `rationale_fn` of the labeler bootstrap."""
    main, facts = parse_context(row["context"])
    return world.rater.rationale(main, facts, row["response1"], row["response2"], choice)

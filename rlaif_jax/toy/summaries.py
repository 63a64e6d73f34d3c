"""The toy world's summary generators: summaries of a post written with known mistakes.

A generator is an error profile (`SummaryProfile`; the named ones are `PROFILES`) of a
writer of "{subject} {verb} {object} ." fact sentences (`text.render_summary`). The
ideal summary states exactly the key facts; the generators make the mistakes Reddit
TL;DRs make: missing key facts, side facts, invented facts (mostly a `PHANTOM_PHRASES`
object, which no post mentions; else a key phrase this post does not state), repeated
facts and truncated sentences. Every error shows in a summary's own words or in whether
its words occur in the post, so the demo's tiny models can learn them in minutes.

`generate_summary` writes one summary, `pair_texts` two different ones from random pair
generators, and `edited_facts` makes the one-edit variants of the contrastive rating
pairs (`rating_corpus`). Deterministic given a `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from rlaif_jax.toy.text import KEY_PHRASES, PHANTOM_PHRASES, Fact, Post, render_summary


@dataclass(frozen=True)
class SummaryProfile:
    """Error profile of a summary writer. Probabilities are per fact or per summary.

    p_key: each key fact is stated; p_side: each side fact is stated; p_invent: an
    invented fact (per summary; a second one with p_invent/3) about the main subject —
    mostly a phantom phrase, else a key phrase the post does not state — replacing a true
    key fact when that one is stated; p_repeat: a sentence is repeated (`max_repeats`
    times at most, each extra copy with probability p_repeat again); p_broken: the last
    sentence is truncated; max_sentences: longer summaries are cut to this many.
    """

    p_key: float
    p_side: float
    p_invent: float
    p_repeat: float
    p_broken: float
    max_sentences: int = 4
    max_repeats: int = 1


PROFILES: dict[str, SummaryProfile] = {
    # The noiseless summary: exactly the key facts (oracle score 1.0).
    "perfect": SummaryProfile(1.0, 0.0, 0.0, 0.0, 0.0),
    # Reddit-like TL;DR references: the SFT targets. Most writers also retell what the
    # bystanders did (p_side 0.65): a habit, not a slip, so greedy imitation inherits it
    # (errors made less than half the time vanish from a greedy policy's mode).
    "reference": SummaryProfile(0.75, 0.65, 0.15, 0.04, 0.06),
    # The unlabeled-pair generators (several policies with different error profiles).
    "good": SummaryProfile(0.9, 0.08, 0.05, 0.02, 0.03),
    "lazy": SummaryProfile(0.45, 0.05, 0.05, 0.02, 0.05, max_sentences=2),
    "chatty": SummaryProfile(0.85, 0.7, 0.1, 0.15, 0.05),
    "hallucinating": SummaryProfile(0.7, 0.15, 0.7, 0.04, 0.05),
    "sloppy": SummaryProfile(0.75, 0.2, 0.1, 0.3, 0.35),
    # A small model decoding greedily: it loses track of what it said and loops.
    "looping": SummaryProfile(0.6, 0.05, 0.05, 0.85, 0.05, max_repeats=3),
}
PAIR_GENERATORS: tuple[str, ...] = (
    "good", "lazy", "chatty", "hallucinating", "sloppy", "looping",
)  # fmt: skip


def _invented_fact(post: Post, rng: random.Random) -> tuple[Fact, Fact]:
    """(invented fact about the main subject, the true key fact it replaces when stated):
    mostly a phantom phrase no post mentions, else a key phrase this post does not state."""
    true = rng.choice(post.key_facts)
    if rng.random() < 0.8:
        verb, obj = rng.choice(PHANTOM_PHRASES)
    else:
        stated = {f[2] for f in post.facts}
        verb, obj = rng.choice([p for p in KEY_PHRASES if p[1] not in stated])
    return (post.main_subject, verb, obj), true


def summary_facts(post: Post, profile: SummaryProfile, rng: random.Random) -> list[Fact]:
    """The fact sentences a writer with `profile` states for `post` (post order)."""
    key = set(post.key_facts)
    out = [f for f in post.facts if rng.random() < (profile.p_key if f in key else profile.p_side)]
    n_invent = int(rng.random() < profile.p_invent) + int(rng.random() < profile.p_invent / 3)
    for _ in range(n_invent):
        fact, replaces = _invented_fact(post, rng)
        if replaces in out:
            out[out.index(replaces)] = fact
        else:
            out.insert(rng.randint(0, len(out)), fact)
    if not out:  # nobody writes an empty TL;DR
        out.append(rng.choice(post.key_facts))
    out = out[: profile.max_sentences]
    if rng.random() < profile.p_repeat:
        i = rng.randrange(len(out))
        j = rng.randint(i + 1, len(out))
        out.insert(j, out[i])
        for _ in range(profile.max_repeats - 1):  # loops: the same sentence again
            if rng.random() >= profile.p_repeat:
                break
            out.insert(j, out[i])
    return out


EDIT_KINDS: tuple[str, ...] = ("side", "invent", "repeat")


def edited_facts(
    post: Post, facts: Sequence[Fact], rng: random.Random, insert: bool = False
) -> tuple[list[Fact], str]:
    """(facts with one content edit, the edit's kind).

    Default (a swap, same length): a key fact stated once becomes a side fact, an invented
    fact or a repeat of another stated sentence; if there is none, a side, invented or
    repeated sentence becomes a missing key fact (kind 'key'; facts come back unchanged if
    nothing is missing). The two summaries differ in what a rater must check, not in length.
    insert=True: one sentence more or less. Half the time a missing key fact is added (kind
    '+key', better) or, if none is missing, a stated one is taken out ('-key', worse); else
    an unstated side fact, an invented fact or a repeat of a stated sentence is added at a
    random place ('+side', '+invent', '+repeat', worse at equal coverage — the case a swap
    never shows: a swap's repeat also loses a key fact, so coverage alone explains it, while
    a policy's loops add repeats on top). Longer is better in about half of these pairs, so
    length does not decide them: what the added sentence *is* does.
    """
    if insert:
        out = list(facts)
        if rng.random() < 0.5:  # a key fact added (better) or taken out (worse)
            missing = [f for f in post.key_facts if f not in out]
            if missing:
                out.insert(rng.randrange(len(out) + 1), rng.choice(missing))
                return out, "+key"
            once = [i for i, f in enumerate(out) if f in post.key_facts and out.count(f) == 1]
            if once:
                del out[rng.choice(once)]
                return out, "-key"
        unstated_side = [f for f in post.side_facts if f not in out]
        kinds = [k for k in EDIT_KINDS if (k != "side" or unstated_side) and (k != "repeat" or out)]
        kind = rng.choice(kinds)
        if kind == "side":
            extra = rng.choice(unstated_side)
        elif kind == "repeat":
            extra = rng.choice(out)
        else:
            extra = _invented_fact(post, rng)[0]
        out.insert(rng.randrange(len(out) + 1), extra)
        return out, "+" + kind
    out = list(facts)
    key = set(post.key_facts)
    stated_once = [i for i, f in enumerate(out) if f in key and out.count(f) == 1]
    if not stated_once:
        missing = [f for f in post.key_facts if f not in out]
        if missing and out:
            out[rng.randrange(len(out))] = rng.choice(missing)
        return out, "key"
    i = rng.choice(stated_once)
    kinds = [
        k
        for k in EDIT_KINDS
        if (k != "side" or post.side_facts) and (k != "repeat" or len(out) > 1)
    ]
    kind = rng.choice(kinds)
    if kind == "side":
        out[i] = rng.choice(post.side_facts)
    elif kind == "repeat":
        out[i] = out[rng.choice([j for j in range(len(out)) if j != i])]
    else:
        out[i] = _invented_fact(post, rng)[0]
    return out, kind


def generate_summary(post: Post, profile: SummaryProfile | str, rng: random.Random) -> str:
    """A summary text for `post` written with `profile` (a SummaryProfile or PROFILES key)."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise KeyError(f"unknown toy summary profile {profile!r}; known: {sorted(PROFILES)}")
        profile = PROFILES[profile]
    text = render_summary(summary_facts(post, profile, rng))
    if rng.random() < profile.p_broken:
        words = text.split()
        # Truncate the last sentence: drop its period (and maybe its object).
        text = " ".join(words[: -rng.choice((1, 2))])
    return text


def pair_texts(post: Post, rng: random.Random) -> tuple[str, str, str, str]:
    """Two different summaries of `post` from randomly drawn `PAIR_GENERATORS`:
    (summary 1, summary 2, generator 1, generator 2)."""
    g1 = rng.choice(PAIR_GENERATORS)
    a = generate_summary(post, g1, rng)
    for _ in range(20):
        g2 = rng.choice(PAIR_GENERATORS)
        b = generate_summary(post, g2, rng)
        if b != a:
            return a, b, g1, g2
    return a, generate_summary(post, "perfect", rng), g1, "perfect"  # a was perfect-like

"""The toy world's judges: the oracle quality, the noisy "human" and the biased bootstrap rater.

**Oracle quality** (`oracle_score`, `judge`). A summary is parsed into fact sentences
(`text.parse_summary`, which accepts any string) and scored against the post's facts:

    q = 1.0 · (key facts stated / key facts in the post)       coverage
      − 0.5 · invented facts     (a well-formed fact that is not in the post)
      − 0.2 · side facts         (true, but about someone other than the title's subject)
      − 0.3 · repeated facts
      − 0.4 · broken sentences   (any chunk that is not "{subject} {verb} {object} .")
      − 0.1 · excess length      (tokens beyond 4 per key fact, in 4-token sentence units)

The perfect summary (exactly the key facts) scores 1.0, an empty one 0.0, garbage below 0.

**The human** (`HumanRater`). A Bradley–Terry rater over the oracle: it perceives
d = (q1 − q2)/tau + logistic noise and picks response1 iff d > 0, so P(response1) =
sigmoid((q1 − q2)/tau). Its confidence is the 9-point scale of the OpenAI comparisons
(1 = definitely response1 … 9 = definitely response2), read off |d|; {1, 2, 8, 9} are the
high-confidence labels the alignment subset keeps (paper §3.5). `tau` is calibrated so
that two independent queries of the same pair agree ~75% of the time over the pair
distribution (the inter-annotator agreement of the paper's data).

**The bootstrap rater** (`BootstrapRater`). The source of the generic rating corpus that
bootstraps the toy off-the-shelf labeler. It sees coverage, side facts, repetition and
broken sentences, but it has blind spots: it does not check facts against the post, so
invented facts cost nothing (and an invented fact that replaces a key fact reads as a
mere omission), and it ignores length. It also has a position bias: a logit bonus for
the first-shown summary, so near-ties (common exactly where it is blind) go to position 1
with high probability, while averaging both orders cancels the bonus.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlaif_jax.data import splits
from rlaif_jax.toy.text import Fact, parse_context, parse_summary

# Calibrated by `calibrate_tau` on the default unlabeled-pair distribution (75% target).
DEFAULT_HUMAN_TAU = 0.32


@dataclass(frozen=True)
class OracleWeights:
    """Weights of the oracle quality (see the module docstring)."""

    coverage: float = 1.0
    invented: float = 0.5
    side: float = 0.2
    repeated: float = 0.3
    broken: float = 0.4
    excess_length: float = 0.1


@dataclass(frozen=True)
class Judgement:
    """The oracle's breakdown of one summary."""

    score: float
    key_covered: int
    num_key: int
    invented: int
    side: int
    repeated: int
    broken: int
    excess_length: float  # in 4-token sentence units


def judge_facts(
    main_subject: str,
    facts: Sequence[Fact],
    summary: str,
    weights: OracleWeights = OracleWeights(),
) -> Judgement:
    """Oracle judgement of `summary` for a post given as (main subject, its facts)."""
    key = {f for f in facts if f[0] == main_subject}
    side = set(facts) - key
    parsed = parse_summary(summary)
    seen: set[Fact] = set()
    covered = invented = n_side = repeated = 0
    for f in parsed.facts:
        if f in seen:
            repeated += 1
            continue
        seen.add(f)
        if f in key:
            covered += 1
        elif f in side:
            n_side += 1
        else:
            invented += 1
    excess = max(0, parsed.num_tokens - 4 * len(key)) / 4.0
    w = weights
    score = (
        w.coverage * covered / max(1, len(key))
        - w.invented * invented
        - w.side * n_side
        - w.repeated * repeated
        - w.broken * parsed.num_broken
        - w.excess_length * excess
    )
    return Judgement(
        score, covered, len(key), invented, n_side, repeated, parsed.num_broken, excess
    )


@functools.lru_cache(maxsize=1 << 16)
def _context_facts(context: str) -> tuple[str, tuple[Fact, ...]]:
    return parse_context(context)


def judge(context: str, summary: str, weights: OracleWeights = OracleWeights()) -> Judgement:
    """Oracle judgement of `summary` for a toy `context` (raises ContextError if `context`
    is not a toy post; any `summary` string is accepted)."""
    main, facts = _context_facts(context)
    return judge_facts(main, facts, summary, weights)


def oracle_score(context: str, summary: str) -> float:
    """The oracle quality q of `summary` for the toy post `context` (1.0 = perfect)."""
    return judge(context, summary).score


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def oracle_prefers(context: str, a: str, b: str, tau: float = DEFAULT_HUMAN_TAU) -> float:
    """P(a ≻ b) for the toy "human evaluation": sigmoid((q_a − q_b)/tau).

    Its argmax is the oracle's preference and equal quality gives exactly 0.5, so a hard
    win rate (ties count half) is the oracle's, and the soft value is the expected vote
    of the noisy human.
    """
    return _sigmoid((oracle_score(context, a) - oracle_score(context, b)) / tau)


def _logistic_noise(rng: random.Random) -> float:
    u = min(max(rng.random(), 1e-12), 1 - 1e-12)
    return math.log(u / (1.0 - u))


def _likert(d: float, thresholds: Sequence[float]) -> int:
    """Perceived margin d (>0: response1) -> 9-point confidence (1 definitely resp. 1)."""
    strength = 1 + sum(abs(d) >= t for t in thresholds)  # 1..4
    return 5 - strength if d > 0 else 5 + strength


@dataclass(frozen=True)
class HumanRater:
    """Noisy Bradley–Terry rater over the oracle (see the module docstring)."""

    tau: float = DEFAULT_HUMAN_TAU
    # |perceived margin| thresholds for confidence strengths 2, 3, 4 (on each side).
    confidence_thresholds: tuple[float, float, float] = (1.0, 2.5, 4.0)

    def prob(self, q1: float, q2: float) -> float:
        """P(response1 preferred) given the two oracle scores."""
        return _sigmoid((q1 - q2) / self.tau)

    def sample(self, q1: float, q2: float, rng: random.Random) -> tuple[float, int]:
        """One labeling: (label 1.0/0.0 = response1 chosen or not, confidence 1..9)."""
        d = (q1 - q2) / self.tau + _logistic_noise(rng)
        return (1.0 if d > 0 else 0.0), _likert(d, self.confidence_thresholds)


@dataclass(frozen=True)
class BootstrapRater:
    """The generic rating corpus's rater: blind spots and a first-position bias.

    P(shown-first preferred) = sigmoid((qb_first − qb_second)/tau + position_bias), with
    qb = key-fact coverage − side_penalty · side facts − repeat_penalty · repeated facts
    − broken_penalty · broken sentences − invented_penalty · invented facts (length unseen;
    invented facts unseen at the default 0, under-weighted below the oracle's 0.5).
    """

    tau: float = 0.2
    position_bias: float = 2.0
    noise: float = 1.0  # scale of the logistic choice noise (0: always the likelier one)
    side_penalty: float = 0.15
    repeat_penalty: float = 0.3
    broken_penalty: float = 0.4
    invented_penalty: float = 0.0
    confidence_thresholds: tuple[float, float, float] = (1.0, 2.5, 4.0)

    def quality(self, main_subject: str, facts: Sequence[Fact], summary: str) -> float:
        """qb: what this rater believes the quality is."""
        return self.breakdown(main_subject, facts, summary)[0]

    def breakdown(
        self, main_subject: str, facts: Sequence[Fact], summary: str
    ) -> tuple[float, int, int, int, int, int, int]:
        """(qb, key facts covered, key facts, side facts, repeated facts, broken, invented)."""
        key = {f for f in facts if f[0] == main_subject}
        side = set(facts) - key
        parsed = parse_summary(summary)
        distinct = set(parsed.facts)
        covered = len(distinct & key)
        n_side = len(distinct & side)
        invented = len(distinct) - covered - n_side
        repeated = len(parsed.facts) - len(distinct)
        qb = (
            covered / max(1, len(key))
            - self.side_penalty * n_side
            - self.repeat_penalty * repeated
            - self.broken_penalty * parsed.num_broken
            - self.invented_penalty * invented
        )
        return qb, covered, len(key), n_side, repeated, parsed.num_broken, invented

    def prob_first(self, qb_first: float, qb_second: float) -> float:
        """P(the first-shown summary is preferred) under `sample`'s choice noise (noise 0:
        1, 0, or 0.5 on an exact tie of the perceived margin)."""
        d = (qb_first - qb_second) / self.tau + self.position_bias
        if self.noise > 0:
            return _sigmoid(d / self.noise)
        return 0.5 if d == 0 else float(d > 0)

    def sample(self, qb1: float, qb2: float, rng: random.Random) -> tuple[float, int]:
        """(label 1.0/0.0 = response1 (shown first) chosen or not, confidence 1..9)."""
        d = (qb1 - qb2) / self.tau + self.position_bias + self.noise * _logistic_noise(rng)
        return (1.0 if d > 0 else 0.0), _likert(d, self.confidence_thresholds)

    def score_1_to_10(self, qb: float, rng: random.Random) -> int:
        """A d-RLAIF-style absolute rating 1..10 of one summary (qb plus a little noise)."""
        return int(min(10, max(1, round(1 + 9 * qb + rng.gauss(0.0, 0.5)))))

    def rationale(
        self, main_subject: str, facts: Sequence[Fact], summary1: str, summary2: str, choice: int
    ) -> str:
        """A short chain-of-thought text for `choice` (1 or 2), written from this rater's
        (blind) point of view, e.g. "summary 1 covers 2 of 3 key facts . summary 2 covers
        3 of 3 key facts and adds 1 side facts . summary 2 is better ."."""
        parts = []
        for i, text in ((1, summary1), (2, summary2)):
            _, cov, n_key, n_side, repeated, broken, invented = self.breakdown(
                main_subject, facts, text
            )
            s = f"summary {i} covers {cov} of {n_key} key facts"
            if invented and self.invented_penalty:
                s += f" and invents {invented} facts"
            if n_side:
                s += f" and adds {n_side} side facts"
            if repeated:
                s += f" and repeats {repeated} facts"
            if broken:
                s += f" and has {broken} broken sentences"
            parts.append(s + " .")
        parts.append(f"summary {choice} is better .")
        return " ".join(parts)


# -- Agreement statistics -----------------------------------------------------------------


def self_agreement(q1: Sequence[float], q2: Sequence[float], tau: float) -> float:
    """Expected agreement of two independent BT labelings of the same pairs:
    mean of p² + (1 − p)² with p = sigmoid((q1 − q2)/tau)."""
    p = 1.0 / (1.0 + np.exp(-(np.asarray(q1) - np.asarray(q2)) / tau))
    return float(np.mean(p * p + (1 - p) * (1 - p)))


def calibrate_tau(
    q1: Sequence[float], q2: Sequence[float], target: float = 0.75, lo=1e-3, hi=10.0
) -> float:
    """The tau whose expected self-agreement on these pairs is `target` (bisection;
    agreement falls monotonically as tau grows)."""
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if self_agreement(q1, q2, mid) > target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def _agreement(p: np.ndarray, h: np.ndarray) -> float:
    """Share of pairs where argmax of P(response1) p matches h (p == 0.5 counts half)."""
    return float(np.mean(np.where(p == 0.5, 0.5, (p > 0.5) == (h > 0.5))))


def world_statistics(world: Any, seed: int = 1) -> dict[str, Any]:
    """The numbers that say what a `world.ToyWorld`'s results mean, on its train pairs.

    human_*: the human's agreement with a re-query of itself (sampled with RNG `seed`, and
    its expectation), with the oracle, and its share of confidence 1/2/8/9 labels.
    bootstrap_*: the rating-corpus rater used as a labeler of the unlabeled pairs (argmax
    of its P(response1)), with one order (as shown) or both orders averaged, against the
    human labels, on all pairs and on the high-confidence pairs (where alignment is
    measured); same_position_rate is the paper's "% same position preferred".
    oracle_score_mean: mean oracle quality of each summary source (reference = the SFT
    train targets; the others are the pair generators), i.e. RL's headroom over SFT.
    """
    recs, infos = world.human_preferences("train"), world.pair_infos("train")
    q1, q2 = (np.array([i.oracle[k] for i in infos]) for k in (0, 1))
    b1, b2 = (np.array([i.rater[k] for i in infos]) for k in (0, 1))
    label = np.array([r["label"] for r in recs])
    high = np.isin([r["confidence"] for r in recs], sorted(splits.HIGH_CONFIDENCE))
    rng = random.Random(seed)
    again = np.array([world.human.sample(a, b, rng)[0] for a, b in zip(q1, q2)])
    oracle_pref = np.where(q1 > q2, 1.0, np.where(q1 < q2, 0.0, 0.5))
    r = world.rater
    p1 = np.array([r.prob_first(a, b) for a, b in zip(b1, b2)])
    p2 = np.array([1.0 - r.prob_first(b, a) for a, b in zip(b1, b2)])
    both = np.round(0.5 * (p1 + p2), 12)  # exactly 0.5 on rater ties
    by_gen: dict[str, list[float]] = {}
    for info in infos:
        for g, q in zip(info.generators, info.oracle):
            by_gen.setdefault(g, []).append(q)
    refs = world.sft_examples("train")
    return {
        "num_pairs": len(recs),
        "human_tau": world.human.tau,
        "human_self_agreement_requeried": float(np.mean(again == label)),
        "human_self_agreement_expected": self_agreement(q1, q2, world.human.tau),
        "human_oracle_agreement": _agreement(oracle_pref, label),
        "human_oracle_agreement_high_confidence": _agreement(oracle_pref[high], label[high]),
        "human_high_confidence_fraction": float(np.mean(high)),
        "bootstrap_human_agreement_single_order": _agreement(p1, label),
        "bootstrap_human_agreement_both_orders": _agreement(both, label),
        "bootstrap_human_agreement_high_confidence_single_order": _agreement(p1[high], label[high]),
        "bootstrap_human_agreement_high_confidence_both_orders": _agreement(
            both[high], label[high]
        ),
        "bootstrap_oracle_agreement_both_orders": _agreement(both, oracle_pref),
        "bootstrap_same_position_rate": float(np.mean((p1 > 0.5) == (p2 <= 0.5))),
        "oracle_score_mean": {
            "perfect": 1.0,
            "reference": float(np.mean([oracle_score(x["context"], x["response"]) for x in refs])),
            **{g: float(np.mean(v)) for g, v in sorted(by_gen.items())},
        },
    }

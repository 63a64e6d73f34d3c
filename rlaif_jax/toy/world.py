"""The toy world: a small synthetic TL;DR summarization task with a known ground truth.

It is the project's embedded default (DESIGN §4): the demo runs SFT → AI labeling → RM →
RL → evaluation on it end to end on a CPU. Its pieces have the same roles as the paper's
data, and the numbers it produces mean this:

- **Posts** (`text`): a title naming a main subject, 2–3 KEY facts about that subject
  and 1–2 SIDE facts about bystanders (who never title a post), as chatty sentences
  ("last week my landlord raised the rent again ."). Summaries are compressed fact
  sentences ("landlord raised rent ."). Key facts are fixed verb–object phrases, side
  facts use their own phrases and most invented facts use objects no post mentions, so
  the main errors (side facts, hallucinations, repeats, truncation, missing facts) show in
  a summary's words or in whether they occur in the post — learnable by the tiny demo
  models in minutes.
- **SFT examples** pair a post with a noisy "reference TL;DR" (misses key facts, adds side
  facts, sometimes invents one or is truncated — the `reference` profile of
  `summaries`). A policy that imitates them inherits their mistakes, which is the
  headroom RL has.
- **Oracle quality** (`oracle.oracle_score`): coverage of the key facts minus
  penalties; 1.0 = the perfect summary. It plays the role of "what humans actually want".
- **Human preferences**: pairs of summaries from several generators (good, lazy, chatty,
  hallucinating, sloppy, looping) labeled by a noisy Bradley–Terry rater over the oracle
  that agrees with itself ~75% of the time, with a 9-point confidence. The train split is
  the RLHF RM's data and (order randomised) the label stage's unlabeled pairs; the
  validation split measures RM pairwise accuracy; the alignment subset (15% of train,
  confidence 1/2/8/9) measures AI labeler alignment, as in paper §3.5.
- **Policy-sampled pairs** (the demo's pair data, `pair_sampling` with
  gin/method/on_policy_pairs.gin): two samples of the SFT policy per post of the human
  train split, rated by the same simulated human (`ToyWorld.human_labels`). They replace
  the generator pairs as the RLHF RM's data, the label stage's input and the alignment
  subset; RM accuracy stays measured on the generator validation pairs.
- **Rating corpus** (`rating_corpus`): pairs on disjoint posts labeled by a *different*
  rater with blind spots and a position bias; the toy "off-the-shelf" labeler is
  bootstrapped on it.
- **Win rates** are judged by `oracle_prefers` (the toy "human evaluation").

Every set uses its own posts (disjoint index namespaces); record i of a set depends only on
(seed, set, i), so the same seed gives identical records in any process and any order.
Run `python -m rlaif_jax.toy.world` to print the world's statistics
(`oracle.world_statistics`). With the defaults:

    human self-agreement (re-queried)              0.75   (tau calibrated to 0.75)
    human–oracle agreement, all / confidence 1,2,8,9   0.83 / 0.95   (alignment ceiling)
    bootstrap rater vs human, one order / both orders  0.72 / 0.78; on confidence
        1,2,8,9 pairs (where alignment is measured) 0.85 / 0.92; same position 0.48
    mean oracle quality: perfect 1.0, good generator 0.76, lazy 0.39, chatty 0.36,
        references (SFT targets) 0.29, sloppy 0.29, hallucinating −0.11, looping −0.24
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections.abc import Iterable, Iterator
from typing import Any

import gin

from rlaif_jax.data import splits
from rlaif_jax.toy import rating_corpus as corpus_lib
from rlaif_jax.toy.oracle import (
    DEFAULT_HUMAN_TAU,
    BootstrapRater,
    HumanRater,
    judge_facts,
    oracle_score,
)
from rlaif_jax.toy.summaries import generate_summary, pair_texts
from rlaif_jax.toy.text import ALL_WORDS, Post, make_post

Record = dict[str, Any]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ToyWorldConfig:
    """Sizes and raters of the toy world. Every number of posts is a disjoint post set.

    num_sft / num_sft_validation: SFT (post -> reference) train / validation examples.
    num_pairs / num_heldout_pairs: human-labeled pairs, train (RLHF RM, unlabeled pairs,
      alignment subset) / validation (RM accuracy on held-out human preferences).
    num_rl_prompts / num_eval_prompts: RL prompts / evaluation prompts (= SFT 'test').
    num_rating_corpus: bootstrap-rater pairs for the toy labeler bootstrap.
    num_alignment: cap on the alignment subset; alignment_fraction: its share of the
      high-confidence train pairs (paper §3.5: 15%).
    human_tau: Bradley–Terry temperature of the human (≈75% self-agreement by default).
    bootstrap_tau / bootstrap_position_bias: the rating-corpus rater's temperature and
      logit bonus for the first-shown summary; bootstrap_noise: the scale of its choice
      noise (0: it always picks the summary it finds likelier to be better, blind spots and
      position bias included — a cleaner teacher for a labeler trained in minutes).
    bootstrap_invented_penalty: what the rater docks per invented fact (0: blind to them).
    rating_edit_fraction: share of rating-corpus pairs that are a generator summary and its
      one-edit variant; rating_insert_share: share of those edits that add an error
      (`summaries.edited_facts(insert=True)`) instead of swapping a key fact out.
    """

    seed: int = 0
    num_sft: int = 4000
    num_sft_validation: int = 200
    num_pairs: int = 4000
    num_heldout_pairs: int = 1000
    num_rl_prompts: int = 2000
    num_eval_prompts: int = 500
    num_rating_corpus: int = 4000
    num_alignment: int = 1000
    alignment_fraction: float = 0.15
    human_tau: float = DEFAULT_HUMAN_TAU
    bootstrap_tau: float = 0.2
    bootstrap_position_bias: float = 2.0
    bootstrap_noise: float = 1.0
    bootstrap_invented_penalty: float = 0.0
    rating_edit_fraction: float = 0.0
    rating_insert_share: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("num_") and (not isinstance(v, int) or v < 0):
                raise ValueError(f"ToyWorldConfig.{f.name} must be an int >= 0, got {v!r}")
        for name in ("human_tau", "bootstrap_tau"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ToyWorldConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("rating_edit_fraction", "rating_insert_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"ToyWorldConfig.{name} must be in [0, 1], got {getattr(self, name)!r}"
                )
        if not 0.0 < self.alignment_fraction <= 1.0:
            raise ValueError(
                f"ToyWorldConfig.alignment_fraction must be in (0, 1], got {self.alignment_fraction!r}"
            )


@dataclasses.dataclass(frozen=True)
class PairInfo:
    """What the world knows about a generated pair (for statistics, not for models)."""

    post: Post
    generators: tuple[str, str]
    oracle: tuple[float, float]  # oracle quality of response1, response2
    rater: tuple[float, float]  # bootstrap rater quality of response1, response2


_SPLITS = {"sft": ("train", "validation", "test"), "pairs": ("train", "validation")}


class ToyWorld:
    """Record sets of the toy world (records.py dicts), generated lazily and cached."""

    def __init__(self, config: ToyWorldConfig | None = None):
        self.config = config or ToyWorldConfig()
        self.human = HumanRater(tau=self.config.human_tau)
        self.rater = BootstrapRater(
            tau=self.config.bootstrap_tau,
            position_bias=self.config.bootstrap_position_bias,
            noise=self.config.bootstrap_noise,
            invented_penalty=self.config.bootstrap_invented_penalty,
        )
        self._cache: dict[str, Any] = {}

    # -- generation -------------------------------------------------------------------

    def _rng(self, kind: str, i: int, part: str) -> random.Random:
        # String seeds are hashed with SHA-512 by `random`: stable across processes.
        return random.Random(f"toy:{self.config.seed}:{kind}:{i}:{part}")

    def post(self, kind: str, i: int) -> Post:
        """Post i of the set `kind` ('sft-train', 'pairs-validation', 'rl', 'rating', ...)."""
        return make_post(self._rng(kind, i, "post"))

    def _posts(self, kind: str, n: int) -> list[Post]:
        key = f"posts:{kind}"
        if key not in self._cache:
            self._cache[key] = [self.post(kind, i) for i in range(n)]
        return self._cache[key]

    def _pairs(self, kind: str, n: int) -> tuple[list[Record], list[PairInfo]]:
        """Pairs on posts of `kind`: human-labeled ('pairs-*') or rater-labeled ('rating')."""
        key = f"pairs:{kind}"
        if key in self._cache:
            return self._cache[key]
        recs, infos = [], []
        for i, post in enumerate(self._posts(kind, n)):
            rng = self._rng(kind, i, "pair")
            contrastive = (
                kind == "rating"
                and self._rng(kind, i, "edit").random() < self.config.rating_edit_fraction
            )
            if contrastive:  # a generator summary and its one-edit variant
                insert_share = self.config.rating_insert_share
                a, b, g1, g2 = corpus_lib.contrastive_texts(post, rng, insert_share)
            else:
                a, b, g1, g2 = pair_texts(post, rng)
            q = tuple(judge_facts(post.main_subject, post.facts, t).score for t in (a, b))
            qb = tuple(self.rater.quality(post.main_subject, post.facts, t) for t in (a, b))
            if kind == "rating":
                label, confidence = self.rater.sample(qb[0], qb[1], rng)
            else:
                label, confidence = self.human.sample(q[0], q[1], rng)
            recs.append(
                {
                    "id": f"toy-{kind}-{i}",
                    "context": post.context,
                    "response1": a,
                    "response2": b,
                    "label": label,
                    "confidence": confidence,
                }
            )
            infos.append(PairInfo(post, (g1, g2), q, qb))
        self._cache[key] = (recs, infos)
        return recs, infos

    # -- record sets ------------------------------------------------------------------

    def _check_split(self, what: str, split: str) -> None:
        if split not in _SPLITS[what]:
            raise ValueError(
                f"toy world {what} split must be one of {_SPLITS[what]}, got {split!r}"
            )

    def sft_examples(self, split: str = "train") -> list[Record]:
        """{id, context, response}: post -> noisy reference TL;DR. 'test' are the eval posts
        (same ids as `eval_prompts`), so references can be scored there too."""
        self._check_split("sft", split)
        c = self.config
        kind, n = {
            "train": ("sft-train", c.num_sft),
            "validation": ("sft-validation", c.num_sft_validation),
            "test": ("eval", c.num_eval_prompts),
        }[split]
        out = []
        for i, post in enumerate(self._posts(kind, n)):
            response = generate_summary(post, "reference", self._rng(kind, i, "reference"))
            out.append({"id": f"toy-{kind}-{i}", "context": post.context, "response": response})
        return out

    def rl_prompts(self) -> list[Record]:
        """{id, context}: RL prompts (their own posts)."""
        return self._prompts("rl", self.config.num_rl_prompts)

    def eval_prompts(self) -> list[Record]:
        """{id, context}: held-out evaluation prompts (their own posts)."""
        return self._prompts("eval", self.config.num_eval_prompts)

    def _prompts(self, kind: str, n: int) -> list[Record]:
        return [
            {"id": f"toy-{kind}-{i}", "context": p.context}
            for i, p in enumerate(self._posts(kind, n))
        ]

    def human_preferences(self, split: str = "train") -> list[Record]:
        """Human-labeled pairs: label = 1.0 if the human chose response1 else 0.0;
        confidence 1..9 (1 = definitely response1, 9 = definitely response2)."""
        self._check_split("pairs", split)
        n = self.config.num_pairs if split == "train" else self.config.num_heldout_pairs
        return [dict(r) for r in self._pairs(f"pairs-{split}", n)[0]]

    def pair_infos(self, split: str = "train") -> list[PairInfo]:
        """Generators and oracle / rater qualities of `human_preferences(split)` ('train',
        'validation') or of `rating_corpus()` ('rating'), in the same order."""
        if split == "rating":
            return list(self._pairs("rating", self.config.num_rating_corpus)[1])
        self._check_split("pairs", split)
        n = self.config.num_pairs if split == "train" else self.config.num_heldout_pairs
        return list(self._pairs(f"pairs-{split}", n)[1])

    def unlabeled_pairs(self, split: str = "train") -> list[Record]:
        """The label stage's input: the human pairs with the order swapped for half of them
        (decided by (seed, id), as `splits.randomize_order`); the human label is kept in
        `label` (flipped with the swap) for alignment and RLHF, confidence mirrored."""
        out = []
        for rec in self.human_preferences(split):
            if splits.uniform(self.config.seed, rec["id"], "order") < 0.5:
                rec = splits.swap_pair(rec)  # also mirrors the confidence scale
            out.append(rec)
        return out

    def alignment_subset(self) -> list[Record]:
        """Labeler-alignment pairs (paper §3.5): `alignment_fraction` of the unlabeled train
        pairs with high-confidence human labels (1, 2, 8, 9), at most `num_alignment`."""
        c = self.config
        subset = splits.alignment_subset(
            self.unlabeled_pairs("train"), "summarize", c.seed, c.alignment_fraction
        )
        return list(itertools.islice(subset, c.num_alignment))

    def rating_corpus(self, both_orders: bool = False, soft: bool = False) -> list[Record]:
        """The generic rating corpus, labeled by the bootstrap rater: pairs in shown order,
        optionally also swapped or with soft labels (`rating_corpus.rating_corpus`)."""
        return corpus_lib.rating_corpus(self, both_orders, soft)

    def rating_scores(self) -> list[tuple[str, str, int]]:
        """The bootstrap rater's 1..10 rating of each corpus summary, as (context, summary,
        rating) (`rating_corpus.rating_scores`)."""
        return corpus_lib.rating_scores(self)

    def rating_rationale(self, row: Record, choice: int) -> str:
        """The bootstrap rater's CoT rationale for a corpus `row` concluding `choice`
        (`rating_corpus.rating_rationale`)."""
        return corpus_lib.rating_rationale(self, row, choice)

    def corpus_texts(self, extra: Iterable[str] = ()) -> Iterator[str]:
        """Texts for training the toy SentencePiece vocabulary: every word once, all
        contexts and summaries, a few rationales, then `extra` (e.g. prompt preambles)."""
        yield " ".join(ALL_WORDS)
        for split in _SPLITS["sft"]:
            for r in self.sft_examples(split):
                yield r["context"]
                yield r["response"]
        for r in self.rl_prompts():
            yield r["context"]
        for corpus in (self.human_preferences("train"), self.human_preferences("validation")):
            for r in corpus:
                yield r["context"]
                yield r["response1"]
                yield r["response2"]
        for i, r in enumerate(self.rating_corpus()):
            yield r["context"]
            yield r["response1"]
            yield r["response2"]
            if i < 200:
                yield self.rating_rationale(r, 1 if r["label"] > 0.5 else 2)
        yield from extra

    def human_labels(self, pairs: Iterable[Record]) -> list[tuple[float, int]]:
        """The simulated human's (label, confidence) for arbitrary pairs of summaries of toy
        posts (e.g. the policy-sampled pairs of `pair_sampling`); deterministic per pair id."""
        out = []
        for rec in pairs:
            q1, q2 = (oracle_score(rec["context"], rec[k]) for k in ("response1", "response2"))
            rng = random.Random(f"toy:{self.config.seed}:human:{rec['id']}")
            out.append(self.human.sample(q1, q2, rng))
        return out

    def sources(self, label_dir: str | None = None) -> dict[str, dict[str, Any]]:
        """The world as `data.tasks` Sources (role -> split -> RecordSource), the same shape
        `summarize_sources` gives for real files."""
        from rlaif_jax.data import formats, tasks

        def src(role: str, split: str, fn) -> tasks.RecordSource:
            return tasks.RecordSource(f"toy/{role}/{split}", role, fn)

        out: dict[str, dict[str, Any]] = {r: {} for r in tasks.ROLE_FEATURES}
        for split in _SPLITS["sft"]:
            out["sft"][split] = src("sft", split, lambda s=split: self.sft_examples(s))
        out["prompts"]["train"] = src("prompts", "train", self.rl_prompts)
        out["prompts"]["test"] = src("prompts", "test", self.eval_prompts)
        for split in _SPLITS["pairs"]:
            out["human_prefs"][split] = src(
                "human_prefs", split, lambda s=split: self.human_preferences(s)
            )
            out["unlabeled"][split] = src(
                "unlabeled", split, lambda s=split: self.unlabeled_pairs(s)
            )
        out["alignment"]["train"] = src("alignment", "train", self.alignment_subset)
        if label_dir:
            out["ai_prefs"]["train"] = src(
                "ai_prefs", "train", lambda: formats.read_ai_preferences(label_dir)
            )
        return out


@gin.configurable
def toy_human_labels(
    pairs: Iterable[Record], config: ToyWorldConfig | None = None
) -> list[tuple[float, int]]:
    """Gin entry point (`sample_pairs.human_labels = @toy_human_labels`): the toy human
    rates pairs (`ToyWorld.human_labels`)."""
    return ToyWorld(config).human_labels(pairs)


@gin.configurable
def toy_sources(
    config: ToyWorldConfig | None = None, label_dir: str | None = None
) -> dict[str, dict[str, Any]]:
    """Gin entry point: the toy world's Sources (see `ToyWorld.sources`)."""
    return ToyWorld(config).sources(label_dir)


if __name__ == "__main__":
    from rlaif_jax.toy.oracle import world_statistics

    print(json.dumps(world_statistics(ToyWorld()), indent=2))

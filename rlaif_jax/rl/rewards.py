"""Reward functions for RL: a reward model (RLAIF / RLHF) or the d-RLAIF labeler (the toy
world adds its oracle as a diagnostic, `toy.judges.ToyOracleReward`).

Rewards are computed on TEXT: the policy's detokenized response, re-tokenized with
the reward model's (or labeler's) own vocabulary, which may differ from the policy's.
Every implementation is a `RewardFn`: `(contexts [B], responses [B]) -> float32 [B]`,
with float rewards end to end (never rounded or cast to int).

Batching: texts are cut into chunks of `batch_size` rows (a multiple of the mesh's
batch divisor; the last chunk is padded with copies and the padding dropped), so a
jitted scorer compiles once per shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np
from jax.sharding import Mesh

from rlaif_jax.data import batching
from rlaif_jax.data.vocab import Vocab
from rlaif_jax.sharding import partition, placement
from rlaif_jax.sharding.rules import Rules


@runtime_checkable
class RewardFn(Protocol):
    """Scores responses to contexts. contexts, responses: B strings -> float32 [B]."""

    def __call__(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray: ...


def _check_inputs(contexts: Sequence[str], responses: Sequence[str]) -> None:
    if len(contexts) != len(responses):
        raise ValueError(
            f"RewardFn got {len(contexts)} contexts but {len(responses)} responses; "
            "they must pair up one to one."
        )


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _pad_rows(rows: np.ndarray, size: int) -> np.ndarray:
    """Pads a short final chunk to `size` rows with copies of its first row."""
    return np.concatenate([rows, np.repeat(rows[:1], size - len(rows), axis=0)], axis=0)


def host_local_rows(x: jax.Array) -> np.ndarray:
    """The rows of a batch-sharded global array that live on this process, in order."""
    if x.is_fully_addressable:
        return np.asarray(x)
    seen, parts = set(), []
    for shard in sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0):
        start = shard.index[0].start or 0
        if start not in seen:
            seen.add(start)
            parts.append(np.asarray(shard.data))
    return np.concatenate(parts, axis=0)


@dataclasses.dataclass
class RewardModelReward:
    """Terminal reward from a scalar-head reward model checkpoint (RLAIF or RLHF).

    The RM reads `context + prompt_suffix` then `response + EOS` in its own vocabulary, laid out
    exactly as in RM training (`batching.sft_batch`), and its score at the last real token
    is the reward. `score_fn(params, tokens [B, L], lengths [B]) -> [B]` is normally
    `decoding.score.sequence_scores` bound to the RM config (`make_rm_score_fn`).
    """

    score_fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
    params: Any
    vocab: Vocab
    mesh: Mesh
    max_context: int
    max_response: int
    prompt_suffix: str = ""
    batch_size: int = 64
    add_bos: bool = False
    context_template: str = "{context}"
    context_truncation: str = "middle"
    stats: batching.TruncationStats = dataclasses.field(default_factory=batching.TruncationStats)

    def __post_init__(self):
        div = partition.batch_size_divisor(self.mesh) * jax.process_count()
        if self.batch_size % div:
            raise ValueError(
                f"RewardModelReward.batch_size={self.batch_size} must be a multiple of the "
                f"mesh batch divisor x processes = {div} (gin: reward_model_from_checkpoint.batch_size)."
            )

    def __call__(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        _check_inputs(contexts, responses)
        out = np.zeros(len(contexts), np.float32)
        local = self.batch_size // jax.process_count()
        for lo, hi in _chunks(len(contexts), local):
            recs = [
                {"context": self.context_template.replace("{context}", c), "response": r}
                for c, r in zip(contexts[lo:hi], responses[lo:hi])
            ]
            batch = batching.sft_batch(
                recs,
                self.vocab,
                self.max_context,
                self.max_response,
                prompt_suffix=self.prompt_suffix,
                context_truncation=self.context_truncation,
                add_bos=self.add_bos,
                stats=self.stats,
            )
            # Fixed shapes: pad a short chunk with copies of its first row (dropped below).
            batch = {k: _pad_rows(v, local) for k, v in batch.items()}
            lengths = batch["attention_mask"].sum(-1).astype(np.int32)
            arrays = partition.global_batch(
                {"tokens": batch["tokens"], "lengths": lengths}, self.mesh
            )
            scores = self.score_fn(self.params, arrays["tokens"], arrays["lengths"])
            out[lo:hi] = host_local_rows(scores)[: hi - lo].astype(np.float32)
        return out


def make_rm_score_fn(config: Any, mesh: Mesh, rules: Rules, param_shardings: Any) -> Callable:
    """Jitted `(params, tokens [B, L], lengths [B]) -> scores [B]` for a scalar-head RM."""
    from rlaif_jax.decoding import score

    def fn(params, tokens, lengths):
        with partition.sharding_context(mesh, rules):
            return score.sequence_scores(config, params, tokens, lengths)

    jitted = partition.jit_sharded(
        fn,
        in_shardings=(
            param_shardings,
            partition.batch_sharding(mesh, 2),
            partition.batch_sharding(mesh, 1),
        ),
        out_shardings=partition.batch_sharding(mesh, 1),
    )

    def call(params, tokens, lengths):
        with partition.sharding_context(mesh, rules):
            return jitted(params, tokens, lengths)

    return call


@dataclasses.dataclass
class DirectLabelerReward:
    """d-RLAIF (paper §1.6): the labeler rates each response 1–10; reward = rescaled score.

    `scorer` is the labeling engineer's `labeling.direct.DirectScorer` (or anything with
    `expected_scores(contexts, responses) -> float [B]` in [1, 10]): the expected score
    Σ i·P(i) over the renormalised "1".."10" tokens, read with the LABELER's vocabulary.
    The reward is `direct.rescale`, the affine (s − 5.5)/4.5 to [−1, 1]. Batching and
    sharding live in the scorer.
    """

    scorer: Any

    def __call__(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        from rlaif_jax.labeling import direct

        _check_inputs(contexts, responses)
        s = np.asarray(self.scorer.expected_scores(list(contexts), list(responses)))
        if s.shape != (len(contexts),):
            raise ValueError(
                f"d-RLAIF scorer returned shape {s.shape}, expected ({len(contexts)},)."
            )
        return direct.rescale(s).astype(np.float32)


class OffloadedReward:
    """A reward function whose model waits in host memory between calls (paper-scale RL:
    the reward model or labeler is idle while the learner samples and updates).

    Wraps a `RewardModelReward` (params in `.params`) or a `DirectLabelerReward` over a
    `labeling.scoring.ModelScorer` (params in `.scorer.scorer.params`): each call moves
    the params to device memory, scores, and moves them back
    (`sharding.placement.to_device` / `to_host`; a backend without a host memory kind
    keeps them on the device)."""

    def __init__(self, inner: RewardFn):
        self.inner = inner
        self._holder = self._params_holder(inner)
        self._holder.params = placement.to_host(self._holder.params)

    @staticmethod
    def _params_holder(inner: Any) -> Any:
        for holder in (inner, getattr(getattr(inner, "scorer", None), "scorer", None)):
            if holder is not None and hasattr(holder, "params"):
                return holder
        raise ValueError(
            f"RolePlacement.offload: the reward {type(inner).__name__} holds no params to "
            "offload (a reward model or a d-RLAIF labeler does)."
        )

    @property
    def params(self) -> Any:
        return self._holder.params

    def __call__(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        self._holder.params = placement.to_device(self._holder.params)
        try:
            return self.inner(contexts, responses)
        finally:
            self._holder.params = placement.to_host(self._holder.params)

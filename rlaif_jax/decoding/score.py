"""Teacher-forced scoring: token log-probs, candidate-token distributions, RM scores.

Every function is a pure jax function (jit it, or use `make_scorer` for a sharded,
compiled-once callable). The LM head is applied only where a result is needed: at the
last real prompt token for candidate distributions, at the last real token for reward
scores. B batch, L length, V vocab, K candidates, P shared-prefix length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rlaif_jax.models import logprob
from rlaif_jax.models import model as model_lib
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.sharding import model_params, partition
from rlaif_jax.sharding.rules import Rules

PyTree = Any


def token_logprobs(config: ModelConfig, params: PyTree, tokens, attention_mask) -> jax.Array:
    """[B, L] float32: log p(tokens[:, t] | tokens[:, :t]) under softmax(logits); 0 at t = 0
    and wherever attention_mask [B, L] is False. One full forward pass (every position's
    logits are needed); the same numbers as the sampler's `logprobs`."""
    tokens = tokens.astype(jnp.int32)
    mask = attention_mask.astype(bool)
    logits, _ = model_lib.apply(config, params, tokens, attention_mask=mask)
    picked = logprob.token_logprobs(logits[:, :-1], tokens[:, 1:])
    out = jnp.concatenate([jnp.zeros_like(picked[:, :1]), picked], axis=1)
    return jnp.where(mask, out, 0.0)


def _renormalise(last_logits, candidate_ids):
    """last_logits [B, V] -> (probs over the K candidates [B, K], full-vocab logprobs [B, K])."""
    full = jax.nn.log_softmax(last_logits.astype(jnp.float32), axis=-1)
    cand = jnp.take(full, jnp.asarray(candidate_ids, jnp.int32), axis=-1)
    return jax.nn.softmax(cand, axis=-1), cand


def candidate_distribution(
    config: ModelConfig, params: PyTree, prompt_tokens, prompt_lengths, candidate_ids
) -> tuple[jax.Array, jax.Array]:
    """Next-token distribution after each prompt's last real token, over K candidates.

    prompt_tokens [B, L] right-padded, prompt_lengths [B], candidate_ids [K] (e.g. the ids
    of '1' and '2'). Returns (probs [B, K] renormalised over the candidates, logprobs
    [B, K] full-vocab log-softmax values). The head runs at one position per row.
    """
    b, length = prompt_tokens.shape
    lengths = prompt_lengths.astype(jnp.int32)
    mask = jnp.arange(length)[None, :] < lengths[:, None]
    logits, _ = model_lib.apply(
        config,
        params,
        prompt_tokens.astype(jnp.int32),
        attention_mask=mask,
        logits_positions=jnp.maximum(lengths - 1, 0),
    )
    return _renormalise(logits, candidate_ids)


def encode_prefix(config: ModelConfig, params: PyTree, prefix_tokens, batch: int, num_slots: int):
    """KV cache [batch, K, num_slots, Dh] per layer holding `prefix_tokens` [P] in slots
    [0, P): one forward pass over a batch of one, then broadcast to every row."""
    p = prefix_tokens.shape[0]
    cache = model_lib.init_cache(config, 1, p)
    _, cache = model_lib.apply(
        config,
        params,
        prefix_tokens.astype(jnp.int32)[None, :],
        attention_mask=jnp.ones((1, p), bool),
        cache=cache,
        cache_index=0,
        logits_positions=jnp.zeros((1,), jnp.int32),
    )
    pad = ((0, 0), (0, 0), (0, num_slots - p), (0, 0))
    # One copy of the prefix's keys/values per row (batch * P * K * Dh per layer) is far
    # cheaper than encoding the P prefix tokens once per row.
    return tuple(
        tuple(
            jnp.broadcast_to(jnp.pad(x, pad), (batch, x.shape[1], num_slots, x.shape[3]))
            for x in layer
        )
        for layer in cache
    )


def candidate_distribution_shared_prefix(
    config: ModelConfig,
    params: PyTree,
    prefix_tokens,
    suffix_tokens,
    suffix_lengths,
    candidate_ids,
) -> tuple[jax.Array, jax.Array]:
    """`candidate_distribution` over prefix ++ suffix[b], with the prefix encoded once.

    prefix_tokens [P] (the labeling preamble + exemplars, identical for every row);
    suffix_tokens [B, L2] right-padded with suffix_lengths [B] >= 1. The prefix's keys and
    values are broadcast to every row; the suffixes attend to them and to themselves.
    Returns (probs [B, K], logprobs [B, K]) as `candidate_distribution` on the
    concatenated text.
    """
    b, l2 = suffix_tokens.shape
    p = prefix_tokens.shape[0]
    lengths = suffix_lengths.astype(jnp.int32)
    cache = encode_prefix(config, params, prefix_tokens, b, p + l2)
    slots = jnp.arange(p + l2)[None, :]
    valid = slots < (p + lengths)[:, None]
    positions = p + jnp.broadcast_to(jnp.arange(l2, dtype=jnp.int32), (b, l2))
    logits, _ = model_lib.apply(
        config,
        params,
        suffix_tokens.astype(jnp.int32),
        positions=positions,
        attention_mask=valid,
        cache=cache,
        cache_index=p,
        logits_positions=jnp.maximum(lengths - 1, 0),
    )
    return _renormalise(logits, candidate_ids)


def sequence_scores(config: ModelConfig, params: PyTree, tokens, lengths) -> jax.Array:
    """[B] float32: the scalar head (reward model / value) at each row's last real token.

    tokens [B, L] right-padded; lengths [B] real tokens per row (>= 1)."""
    b, length = tokens.shape
    lengths = lengths.astype(jnp.int32)
    mask = jnp.arange(length)[None, :] < lengths[:, None]
    out, _ = model_lib.apply(
        config,
        params,
        tokens.astype(jnp.int32),
        head="scalar",
        attention_mask=mask,
        logits_positions=jnp.maximum(lengths - 1, 0),
    )
    return out


_KINDS = ("token_logprobs", "candidates", "candidates_shared_prefix", "sequence_scores")


def make_scorer(
    config: ModelConfig,
    mesh: Mesh,
    rules: Rules,
    kind: str = "candidates",
    *,
    param_shardings: PyTree = None,
) -> Callable[..., Any]:
    """A jitted, sharded scorer compiled once per input shape (rows over ('data', 'fsdp')).

    kind 'token_logprobs': (params, tokens [B, L], attention_mask [B, L]) -> [B, L];
    'candidates': (params, prompt_tokens, prompt_lengths, candidate_ids) -> (probs, logprobs);
    'candidates_shared_prefix': (params, prefix [P], suffix_tokens, suffix_lengths,
    candidate_ids) -> (probs, logprobs); 'sequence_scores': (params, tokens, lengths) -> [B].
    param_shardings defaults to the model's logical rules (head 'scalar' for
    'sequence_scores').
    """
    if kind not in _KINDS:
        raise ValueError(f"make_scorer kind={kind!r}; choose one of {_KINDS}.")
    head = "scalar" if kind == "sequence_scores" else "lm"
    if param_shardings is None:
        _, param_shardings = model_params.abstract_params(config, mesh, rules, head)
    rows1, rows2 = partition.batch_sharding(mesh, 1), partition.batch_sharding(mesh, 2)
    rep = partition.replicated(mesh)
    fn, ins, outs = {
        "token_logprobs": (token_logprobs, (rows2, rows2), rows2),
        "candidates": (candidate_distribution, (rows2, rows1, rep), (rows2, rows2)),
        "candidates_shared_prefix": (
            candidate_distribution_shared_prefix,
            (rep, rows2, rows1, rep),
            (rows2, rows2),
        ),
        "sequence_scores": (sequence_scores, (rows2, rows1), rows1),
    }[kind]

    def scoped(params, *args):
        with partition.sharding_context(mesh, rules):
            return functools.partial(fn, config)(params, *args)

    jitted = partition.jit_sharded(scoped, (param_shardings, *ins), outs)

    def run(params, *args):
        with partition.sharding_context(mesh, rules):
            return jitted(params, *args)

    return run

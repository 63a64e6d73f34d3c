"""Rollouts: sample responses, then score them under policy, anchor and value in one pass each.

Shapes: B prompts, S samples per prompt, N = B·S rollouts, Lp prompt length (right
padded), T max new tokens, L = Lp + T, V vocab.

A rollout row is the prompt's real tokens followed directly by the response (so
positions are contiguous, as during sampling), then padding: `pack_sequences`. The
model predicts token p from tokens < p, so response token t (at position len_p + t)
is read from the logits at position len_p + t − 1 — the "state" x_t of the MDP, where
the value V(x_t) is read too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rlaif_jax.models.logprob import token_logprobs

Array = jax.Array


class Packed(NamedTuple):
    """Prompt + response rows. tokens [N, L] int32, attention_mask [N, L] int32 (1 = real
    token), state_positions [N, T] int32 (the position whose output predicts response
    token t, i.e. where log π(a_t|x_t) and V(x_t) are read)."""

    tokens: Array
    attention_mask: Array
    state_positions: Array


def pack_sequences(
    prompt_tokens: Array,
    prompt_lengths: Array,
    response_tokens: Array,
    response_mask: Array,
    pad_id: int,
) -> Packed:
    """Concatenates each prompt's real tokens with its response. Jittable.

    prompt_tokens [N, Lp] right-padded, prompt_lengths [N], response_tokens [N, T],
    response_mask [N, T] (1 up to and including EOS).
    """
    n, lp = prompt_tokens.shape
    t = response_tokens.shape[1]
    pos = jnp.arange(lp + t, dtype=jnp.int32)[None, :]
    plen = prompt_lengths.astype(jnp.int32)[:, None]
    in_prompt = pos < plen
    ridx = jnp.clip(pos - plen, 0, t - 1)
    resp_tok = jnp.take_along_axis(response_tokens, ridx, axis=1)
    resp_ok = (jnp.take_along_axis(response_mask, ridx, axis=1) > 0) & (pos >= plen)
    resp_ok &= pos - plen < t
    prompt_full = jnp.concatenate(
        [prompt_tokens, jnp.full((n, t), pad_id, prompt_tokens.dtype)], axis=1
    )
    tokens = jnp.where(in_prompt, prompt_full, jnp.where(resp_ok, resp_tok, pad_id))
    state_positions = plen + jnp.arange(t, dtype=jnp.int32)[None, :] - 1
    return Packed(
        tokens=tokens.astype(jnp.int32),
        attention_mask=(in_prompt | resp_ok).astype(jnp.int32),
        state_positions=state_positions,
    )


def policy_outputs(
    model: Any, params: Any, packed: Packed, response_tokens: Array
) -> tuple[Array, Array]:
    """(log π(a_t|x_t) [N, T], logits [N, T, V]) teacher-forced; logits only at the states."""
    logits, _ = model.apply(
        {"params": params},
        packed.tokens,
        attention_mask=packed.attention_mask,
        logits_positions=packed.state_positions,
    )
    return token_logprobs(logits, response_tokens), logits


def value_outputs(model: Any, params: Any, packed: Packed) -> Array:
    """V(x_t) [N, T] float32 from a scalar-head model read at the states."""
    values, _ = model.apply(
        {"params": params},
        packed.tokens,
        attention_mask=packed.attention_mask,
        logits_positions=packed.state_positions,
    )
    values = values.astype(jnp.float32)
    return values[..., 0] if values.ndim == 3 else values

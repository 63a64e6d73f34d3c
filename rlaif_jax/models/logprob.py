"""log softmax(logits)[token] with a one-pass backward: the log-probability every loss
reads (SFT's cross-entropy, the policy gradient's log π, scoring).

Autodiff of `take_along_axis(log_softmax(logits), token)` materialises a zero [.., V]
array, scatters the cotangent into it, and differentiates log_softmax through its own
chain: several passes over the largest activation of the model (B·L·V floats). The
backward here is one element-wise pass, d logits = Σ_k g_k·(onehot(token_k) − softmax),
from the row max and normaliser kept by the forward. Values are log_softmax's; gradients
are autodiff's (tests/unit/models/test_projection_logprob.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs(logits, tokens):
    """log softmax(logits)[tokens] in float32. logits [..., V] (any float dtype), tokens
    [...] int -> [...] float32."""
    return picked_logprobs(logits, tokens[..., None])[..., 0]


@jax.custom_vjp
def picked_logprobs(logits, tokens):
    """log softmax(logits) at K tokens per row, one normaliser for all K (e.g. a target
    and its alternative). logits [..., V], tokens [..., K] int -> [..., K] float32."""
    return _forward(logits, tokens)[0]


def _forward(logits, tokens):
    x = logits.astype(jnp.float32)
    row_max = jax.lax.stop_gradient(x.max(axis=-1, keepdims=True))
    log_norm = jnp.log(jnp.exp(x - row_max).sum(axis=-1, keepdims=True))
    picked = jnp.take_along_axis(x, tokens.astype(jnp.int32), axis=-1)
    return (picked - row_max) - log_norm, row_max + log_norm


def _picked_logprobs_fwd(logits, tokens):
    out, log_z = _forward(logits, tokens)
    return out, (logits, tokens, log_z)


def _picked_logprobs_bwd(residuals, g):
    logits, tokens, log_z = residuals
    g = g.astype(jnp.float32)
    probs = jnp.exp(logits.astype(jnp.float32) - log_z)
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    dlogits = 0.0
    for k in range(tokens.shape[-1]):  # K is small and static: still one fused pass
        onehot = (vocab == tokens[..., k : k + 1].astype(jnp.int32)).astype(jnp.float32)
        dlogits = dlogits + g[..., k : k + 1] * (onehot - probs)
    return dlogits.astype(logits.dtype), None


picked_logprobs.defvjp(_picked_logprobs_fwd, _picked_logprobs_bwd)

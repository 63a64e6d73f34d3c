"""Masked softmax attention without a KV cache, with its backward written out so that no
[.., L, S] array is ever transposed.

Every backend's matmul kernel wants row-major operands, lhs [batch, M, K] and rhs
[batch, K, N]. Under autodiff of `einsum('blkgd,bskd->bkgls')` XLA meets that by
transposing the [B, K, G, L, S] scores, probabilities and their gradients (one copy of
the largest activation of attention per transpose, several per layer). Here the queries
are laid out heads-first once, every dot is issued in that canonical form, and the
gradients of keys and values are computed transposed (dK^T = Q^T·dS, dV^T = dO^T·P), so
only [.., L, Dh]-sized operands are ever transposed. On a 2-core CPU this cut the
attention part of a 4-layer d_model 512 train step by about a third (bench/RESULTS.md).
Values and gradients are the einsum path's (tests/unit/models/test_softmax_attention.py).

Shapes: B batch, L queries, S keys, H = K·G query heads over K kv heads, Dh head dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -2.3819763e38  # large negative that stays finite in bf16/fp32


def _dot(lhs, rhs, out_dtype=None):
    """[B, K, M, C] · [B, K, C, N] -> [B, K, M, N], batched over the two leading dims."""
    return jax.lax.dot_general(
        lhs, rhs, (((3,), (2,)), ((0, 1), (0, 1))), preferred_element_type=out_dtype
    )


def _heads_first(x, kv_heads: int):
    """[B, L, H, Dh] -> [B, K, G·L, Dh] (query head h = k·G + g)."""
    b, length, h, dh = x.shape
    x = x.reshape(b, length, kv_heads, h // kv_heads, dh).transpose(0, 2, 3, 1, 4)
    return x.reshape(b, kv_heads, (h // kv_heads) * length, dh)


def _heads_last(x, length: int):
    """[B, K, G·L, Dh] -> [B, L, H, Dh]: the inverse of `_heads_first`."""
    b, k, gl, dh = x.shape
    x = x.reshape(b, k, gl // length, length, dh).transpose(0, 3, 1, 2, 4)
    return x.reshape(b, length, k * (gl // length), dh)


def _probs(qh, k, mask):
    """Softmax probabilities [B, K, G·L, S] float32 of heads-first queries against k."""
    b, kv, gl, _ = qh.shape
    length, s = mask.shape[1], mask.shape[2]
    # Scores accumulate in float32 whatever the compute dtype.
    scores = _dot(qh, k.transpose(0, 2, 3, 1), jnp.float32)  # k^T [B, K, Dh, S]
    allowed = jnp.broadcast_to(mask[:, None, None], (b, kv, gl // length, length, s))
    scores = jnp.where(allowed.reshape(b, kv, gl, s), scores, NEG_INF)
    e = jnp.exp(scores - scores.max(axis=-1, keepdims=True))
    return e * (1.0 / e.sum(axis=-1, keepdims=True))


@jax.custom_vjp
def softmax_attention(q, k, v, mask):
    """softmax(q·k^T masked)·v. q [B, L, H, Dh] (pre-scaled), k, v [B, S, K, Dh], mask
    [B, L, S] bool (True = may attend) -> [B, L, H, Dh] in v's dtype. Scores and softmax
    in float32; P·V in the compute dtype."""
    return _forward(q, k, v, mask)[0]


def _forward(q, k, v, mask):
    qh = _heads_first(q, k.shape[2])
    probs = _probs(qh, k, mask).astype(v.dtype)
    out = _dot(probs, v.transpose(0, 2, 1, 3))  # v [B, K, S, Dh]
    return _heads_last(out, q.shape[1]), (qh, k, v, probs)


def _bwd(residuals, d_out):
    qh, k, v, probs = residuals
    length = d_out.shape[1]
    f32 = jnp.float32
    d_o = _heads_first(d_out.astype(v.dtype), k.shape[2])  # [B, K, G·L, Dh]
    # dV^T = dO^T·P and dP = dO·V^T, in the compute dtype (P·V's own backward).
    dv_t = _dot(d_o.transpose(0, 1, 3, 2), probs)  # [B, K, Dh, S]
    d_p = _dot(d_o, v.transpose(0, 2, 3, 1)).astype(f32)  # [B, K, G·L, S]
    p = probs.astype(f32)
    d_s = p * (d_p - (d_p * p).sum(axis=-1, keepdims=True))  # masked entries: p = 0
    # dQ = dS·K and dK^T = Q^T·dS in float32, as the scores were computed.
    d_qh = _dot(d_s, k.transpose(0, 2, 1, 3).astype(f32))  # [B, K, G·L, Dh]
    dk_t = _dot(qh.transpose(0, 1, 3, 2).astype(f32), d_s)  # [B, K, Dh, S]
    dq = _heads_last(d_qh, length).astype(qh.dtype)
    dk = dk_t.transpose(0, 3, 1, 2).astype(k.dtype)  # [B, S, K, Dh]
    dv = dv_t.transpose(0, 3, 1, 2).astype(v.dtype)
    return dq, dk, dv, None


softmax_attention.defvjp(_forward, _bwd)

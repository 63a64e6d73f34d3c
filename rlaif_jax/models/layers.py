"""Transformer building blocks with logical axis names (params and activations).

Conventions: B batch, L query length, S key length (cache slots), D model, H query
heads, K kv heads, G = H // K, Dh head dim, F mlp hidden.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlaif_jax.models import lora
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.models.projection import project
from rlaif_jax.sharding import axes as ax

_NEG_INF = -2.3819763e38  # large negative that stays finite in bf16/fp32


def _dense_init(axes_names, fan_in: int):
    """Truncated normal with std 1/sqrt(fan_in) over multi-dim kernels."""
    return nn.with_logical_partitioning(
        lambda key, shape, dtype: (
            jax.random.truncated_normal(key, -2, 2, shape, dtype) / math.sqrt(fan_in)
        ),
        axes_names,
    )


class RMSNorm(nn.Module):
    """RMSNorm over the last dim; Gemma-style (1 + w) scaling when `plus_one`."""

    eps: float = 1e-6
    plus_one: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    axis_name: str = ax.NORM

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros if self.plus_one else nn.initializers.ones
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(init, (self.axis_name,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        s = scale.astype(jnp.float32)
        y = y * (1.0 + s if self.plus_one else s)
        return y.astype(self.dtype)


def rope_inv_freq(config: ModelConfig, is_global: bool) -> jnp.ndarray:
    """Inverse frequencies [Dh/2], with Llama-3 / linear scaling on global layers."""
    theta = (
        config.rope_theta
        if is_global or config.rope_local_theta is None
        else config.rope_local_theta
    )
    dh = config.head_dim
    inv = 1.0 / (theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
    scaling = config.rope_scaling_dict if is_global else None
    if not scaling:
        return inv
    kind = scaling["rope_type"]
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv / factor
    if kind == "llama3":
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        scaled = jnp.where(wavelen > old / low, inv / factor, inv)
        mid = (1 - smooth) * inv / factor + smooth * inv
        is_mid = (wavelen <= old / low) & (wavelen >= old / high)
        return jnp.where(is_mid, mid, scaled)
    raise ValueError(f"ModelConfig.rope_scaling type {kind!r} is not supported.")


def rope_tables(config: ModelConfig, positions, is_global: bool, num_positions=None):
    """RoPE's (cos, sin), each [B, L, Dh/2] float32, for positions [B, L] int.

    num_positions (static): a bound on every position. With it the angles are computed
    once over [num_positions, Dh/2] and each row gathers its own. Without it they are
    computed at [B, L, Dh/2] directly (a decode step's few positions). Compute the tables
    once per forward and hand them to every layer: XLA CPU fuses a trigonometric table
    built straight from iota or from positions into each consumer, recomputing sin and cos
    for every head and both halves in all 2 x num_layers RoPE fusions of the forward and
    again in the backward (~10x the time of RoPE on a stored table); a gathered table is
    computed once.
    """
    inv_freq = rope_inv_freq(config, is_global)
    half = inv_freq.shape[0]
    if num_positions is None:
        angles = positions.astype(jnp.float32)[..., None] * inv_freq
        return jnp.cos(angles), jnp.sin(angles)
    angles = jnp.arange(num_positions, dtype=jnp.float32)[:, None] * inv_freq
    table = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)  # [P, Dh]
    rows = jnp.take(table, positions, axis=0, mode="fill", fill_value=jnp.nan)
    return rows[..., :half], rows[..., half:]


def apply_rope(x, cos, sin):
    """Rotary embedding, 'rotate_half' convention (dim j pairs with j + Dh/2).

    x: [B, L, N, Dh]; cos, sin: [B, L, Dh/2] (`rope_tables`).
    """
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class Attention(nn.Module):
    """Multi-head / grouped-query / multi-query attention with an optional KV cache."""

    config: ModelConfig
    is_global: bool = True

    @nn.compact
    def __call__(self, x, rope, mask, cache=None, cache_index=None, kv_lengths=None):
        """x [B, L, D]; rope: (cos, sin) [B, L, Dh/2] (`rope_tables` of this layer's kind);
        mask [B, L, S] bool (True = may attend).

        kv_lengths [B] (optional) says the mask is exactly causal over right-padded rows of
        these lengths (S == L), which lets fused kernels skip the masked blocks.

        Without a cache S == L. With cache = (k, v) each [B, S, K, Dh], the new keys and
        values are written at slots [cache_index, cache_index + L) and attention runs over
        all S slots. Returns (out [B, L, D], new cache or None).
        """
        c = self.config
        dt = jnp.dtype(c.dtype)
        h, k, dh, d = c.num_heads, c.num_kv_heads, c.head_dim, c.d_model

        bias_h = (ax.HEADS, ax.HEAD_DIM) if c.qkv_bias else None
        bias_k = (ax.KV_HEADS, ax.HEAD_DIM) if c.qkv_bias else None
        q_kernel, q_bias = self._proj("q", (ax.EMBED, ax.HEADS, ax.HEAD_DIM), (d, h, dh), d, bias_h)
        k_kernel, k_bias = self._proj(
            "k", (ax.EMBED, ax.KV_HEADS, ax.HEAD_DIM), (d, k, dh), d, bias_k
        )
        v_kernel, v_bias = self._proj(
            "v", (ax.EMBED, ax.KV_HEADS, ax.HEAD_DIM), (d, k, dh), d, bias_k
        )
        # lora.adapt adds a low-rank update where the 'lora' collection has one.
        q = lora.adapt(self, "q", x, project(x, q_kernel.astype(dt)))
        kk = lora.adapt(self, "k", x, project(x, k_kernel.astype(dt)))
        v = lora.adapt(self, "v", x, project(x, v_kernel.astype(dt)))
        if c.qkv_bias:
            q, kk, v = q + q_bias.astype(dt), kk + k_bias.astype(dt), v + v_bias.astype(dt)
        if c.qk_norm:
            q = RMSNorm(
                c.norm_eps,
                c.norm_plus_one,
                dt,
                jnp.dtype(c.param_dtype),
                ax.HEAD_DIM,
                name="q_norm",
            )(q)
            kk = RMSNorm(
                c.norm_eps,
                c.norm_plus_one,
                dt,
                jnp.dtype(c.param_dtype),
                ax.HEAD_DIM,
                name="k_norm",
            )(kk)
        q = apply_rope(q, *rope)
        kk = apply_rope(kk, *rope)
        q = nn.with_logical_constraint(
            q, (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_HEADS, ax.ACT_HEAD_DIM)
        )

        new_cache = None
        if cache is not None:
            # The cache is [B, K, S, Dh]: the new [B, L, K, Dh] keys/values are transposed
            # (L rows), never the cache.
            ck, cv = cache
            names = (ax.ACT_BATCH, ax.ACT_KV_HEADS, ax.CACHE_LENGTH, ax.ACT_HEAD_DIM)
            kk = jax.lax.dynamic_update_slice_in_dim(
                ck, kk.astype(ck.dtype).transpose(0, 2, 1, 3), cache_index, axis=2
            )
            v = jax.lax.dynamic_update_slice_in_dim(
                cv, v.astype(cv.dtype).transpose(0, 2, 1, 3), cache_index, axis=2
            )
            kk = nn.with_logical_constraint(kk, names)
            v = nn.with_logical_constraint(v, names)
            new_cache = (kk, v)

        scale = (c.query_pre_attn_scalar or dh) ** -0.5
        out = attend(
            q * jnp.asarray(scale, dt),
            kk.astype(dt),
            v.astype(dt),
            mask,
            c.attn_softcap,
            c.attention_impl,
            kv_lengths if self.is_global or c.sliding_window is None else None,
            heads_first=cache is not None,
        )
        out = nn.with_logical_constraint(
            out, (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_HEADS, ax.ACT_HEAD_DIM)
        )
        o_kernel, _ = self._proj("o", (ax.HEADS, ax.HEAD_DIM, ax.EMBED), (h, dh, d), h * dh)
        y = lora.adapt(self, "o", out, project(out, o_kernel.astype(dt), 2))
        return y, new_cache

    def _proj(self, name: str, axes_names, shape, fan_in, bias_axes=None):
        pdt = jnp.dtype(self.config.param_dtype)
        return _Proj(axes_names, shape, fan_in, pdt, bias_axes, name=name)()


class _Proj(nn.Module):
    """A projection's kernel (and optional bias) under one scope: params .../q/{kernel,bias},
    the paths the HF importers expect. Returns (kernel, bias or None)."""

    axes_names: tuple
    shape: tuple
    fan_in: int
    param_dtype: jnp.dtype
    bias_axes: tuple | None = None

    @nn.compact
    def __call__(self):
        kernel = self.param(
            "kernel", _dense_init(self.axes_names, self.fan_in), self.shape, self.param_dtype
        )
        bias = None
        if self.bias_axes is not None:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, self.bias_axes),
                self.shape[1:],
                self.param_dtype,
            )
        return kernel, bias


def attend(q, k, v, mask, softcap=None, impl: str = "xla", kv_lengths=None, heads_first=False):
    """Softmax attention with GQA. q [B, L, H, Dh] (pre-scaled); k, v [B, S, K, Dh]
    ([B, K, S, Dh] with `heads_first`, the KV cache's layout); mask [B, L, S] bool.
    Returns [B, L, H, Dh]. Scores and softmax in float32.

    impl 'xla': einsums over the explicit mask. impl 'cudnn' (cuDNN flash attention) or
    'dpa' (`jax.nn.dot_product_attention`, backend's choice) when `kv_lengths` [B] is
    given (causal self-attention over right-padded rows: training, scoring, prefill) and
    there is no soft-cap; otherwise, e.g. one-token decode steps, the einsum path.
    """
    b, length, h, dh = q.shape
    if impl in ("cudnn", "dpa") and kv_lengths is not None and softcap is None:
        if heads_first:  # a prefill filling the cache: one transpose per call
            k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            scale=1.0,
            is_causal=True,
            query_seq_lengths=kv_lengths,
            key_value_seq_lengths=kv_lengths,
            implementation="cudnn" if impl == "cudnn" else None,
        )
    kv = "bksd" if heads_first else "bskd"
    kh = k.shape[1 if heads_first else 2]
    qg = q.reshape(b, length, kh, h // kh, dh)
    scores = jnp.einsum(f"blkgd,{kv}->bkgls", qg, k, preferred_element_type=jnp.float32)
    if softcap is not None:
        scores = softcap * jnp.tanh(scores / softcap)
    scores = jnp.where(mask[:, None, None, :, :], scores, _NEG_INF)
    probs = softmax(scores).astype(v.dtype)
    out = jnp.einsum(f"bkgls,{kv}->blkgd", probs, v)
    return out.reshape(b, length, h, dh)


@jax.custom_jvp
def softmax(x):
    """Softmax over the last axis; `jax.nn.softmax`'s values and derivative, normalised
    by one reciprocal per row times the exponentials instead of a division of every
    [.., S] score (element-wise division is the slow op of CPU attention)."""
    e = jnp.exp(x - jax.lax.stop_gradient(x.max(axis=-1, keepdims=True)))
    return e * (1.0 / e.sum(axis=-1, keepdims=True))


@softmax.defjvp
def _softmax_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = softmax(x)
    return y, y * (t - (y * t).sum(axis=-1, keepdims=True))


@jax.custom_vjp
def swiglu(g, u):
    """silu(g) * u ([.., F] each): SwiGLU's gate, with a one-pass backward (the sigmoid
    computed once for both input gradients instead of autodiff's chain through silu)."""
    return jax.nn.silu(g) * u


def _swiglu_fwd(g, u):
    return swiglu(g, u), (g, u)


def _swiglu_bwd(res, dy):
    g, u = res
    sig = jax.nn.sigmoid(g.astype(jnp.float32))
    gf = g.astype(jnp.float32)
    silu = gf * sig
    dyf = dy.astype(jnp.float32)
    dg = dyf * u.astype(jnp.float32) * (sig + silu * (1.0 - sig))
    return dg.astype(g.dtype), (dyf * silu).astype(u.dtype)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


class MLP(nn.Module):
    """Gated MLP: down(act(gate(x)) * up(x)). x [B, L, D] -> [B, L, D]."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        gate, _ = _Proj((ax.EMBED, ax.MLP), (c.d_model, c.mlp_dim), c.d_model, pdt, name="gate")()
        up, _ = _Proj((ax.EMBED, ax.MLP), (c.d_model, c.mlp_dim), c.d_model, pdt, name="up")()
        down, _ = _Proj((ax.MLP, ax.EMBED), (c.mlp_dim, c.d_model), c.mlp_dim, pdt, name="down")()
        g = lora.adapt(self, "gate", x, project(x, gate.astype(dt)))
        u = lora.adapt(self, "up", x, project(x, up.astype(dt)))
        if c.mlp_activation == "silu":
            hdn = swiglu(g, u)
        else:
            hdn = jax.nn.gelu(g, approximate=c.mlp_activation == "gelu_tanh") * u
        hdn = nn.with_logical_constraint(hdn, (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_MLP))
        return lora.adapt(self, "down", hdn, project(hdn, down.astype(dt)))

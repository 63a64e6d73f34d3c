"""The decoder-only transformer shared by every role, with an LM or a scalar head.

Layers are a Python loop (not `lax.scan`): each layer's KV cache is its own array in
the decode loop's carry, updated in place (DESIGN §6: rewriting a scanned cache every
step made decoding ~3x slower).

Param tree (HF importers rely on these names): embedder/embedding [V, D],
layers_{i}/{pre_attn_norm, post_attn_norm, pre_mlp_norm, post_mlp_norm}/scale [D],
layers_{i}/attn/{q,k,v}/kernel [D, H|K, Dh], layers_{i}/attn/o/kernel [H, Dh, D],
layers_{i}/mlp/{gate,up}/kernel [D, F], layers_{i}/mlp/down/kernel [F, D],
final_norm/scale [D], unembed/kernel [D, V] (untied LM) or score_head/kernel [D, 1].
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlaif_jax.models import projection
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.models.layers import MLP, Attention, RMSNorm, _dense_init, rope_tables
from rlaif_jax.models.projection import project
from rlaif_jax.sharding import axes as ax

KVCache = tuple  # ((k [B, K, S, Dh], v [B, K, S, Dh]), ...) one pair per layer


class Block(nn.Module):
    config: ModelConfig
    is_global: bool = True

    @nn.compact
    def __call__(self, x, rope, mask, cache=None, cache_index=None, kv_lengths=None):
        """x [B, L, D]; rope (cos, sin) [B, L, Dh/2]; mask [B, L, S]: see `Attention`."""
        c = self.config
        dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)

        def norm(name):
            return RMSNorm(c.norm_eps, c.norm_plus_one, dt, pdt, name=name)

        h, new_cache = Attention(c, self.is_global, name="attn")(
            norm("pre_attn_norm")(x), rope, mask, cache, cache_index, kv_lengths
        )
        if c.post_attn_norm:
            h = norm("post_attn_norm")(h)
        x = x + h
        h = MLP(c, name="mlp")(norm("pre_mlp_norm")(x))
        if c.post_mlp_norm:
            h = norm("post_mlp_norm")(h)
        x = nn.with_logical_constraint(x + h, (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_EMBED))
        return x, new_cache


def _remat_policy(name: str):
    if name == "dots":  # the weight matmuls' outputs (`project`'s, and any plain dot's)
        return jax.checkpoint_policies.save_from_both_policies(
            jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
            jax.checkpoint_policies.save_only_these_names(projection.CHECKPOINT_NAME),
        )
    return jax.checkpoint_policies.nothing_saveable


def attention_mask_for(
    attention_mask,
    positions,
    sliding_window: int | None = None,
    cache_index=None,
    num_slots: int | None = None,
):
    """Boolean [B, L, S] mask: causal in slot order, keys restricted to valid slots.

    Without a cache, attention_mask [B, L] marks real tokens and S == L. With a cache,
    attention_mask [B, S] marks valid cache slots (after this call's writes), and query i
    sits at slot cache_index + i. The sliding window is measured in token positions, not
    slots (a row's valid slots need not be contiguous: the sampler writes a short prompt's
    continuation after the padded prompt): a valid key's position is the number of valid
    slots before it, the query's is `positions` [B, L].
    """
    length = positions.shape[1]
    valid = attention_mask.astype(bool)
    if cache_index is None:
        q_slot = jnp.arange(length)
        k_slot = jnp.arange(length)
    else:
        q_slot = cache_index + jnp.arange(length)
        k_slot = jnp.arange(num_slots)
    allowed = (k_slot[None, :] <= q_slot[:, None])[None] & valid[:, None, :]  # [B, L, S]
    if sliding_window is not None:
        if cache_index is None:
            k_pos = positions
        else:
            k_pos = jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1
        dist = positions[:, :, None] - k_pos[:, None, :]
        allowed &= dist < sliding_window
    return allowed


class Transformer(nn.Module):
    """Decoder-only LM (`head='lm'`) or scalar-head model (`head='scalar'`, reward/value)."""

    config: ModelConfig
    head: str = "lm"

    @nn.compact
    def __call__(
        self,
        tokens,
        positions=None,
        attention_mask=None,
        cache: KVCache | None = None,
        cache_index=None,
        logits_positions=None,
    ):
        """tokens [B, L] int32; positions [B, L] (default arange); attention_mask [B, L] bool
        True for real tokens ([B, S] over cache slots when `cache` is given); cache: per-layer
        (k, v); cache_index: scalar slot of tokens[:, 0]; logits_positions: [B] or [B, T] query
        indices at which to apply the head (else every position).

        Returns (out, new_cache): out is float32 logits [B, L|T, V] ([B, V] for [B] positions)
        for 'lm', or float32 values [B, L|T] ([B]) for 'scalar'.
        """
        c = self.config
        dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        b, length = tokens.shape
        # A bound on every position, for RoPE's tables (`rope_tables`): L for the default
        # positions, the cache's slot count with a cache (a token's position never exceeds
        # its slot), none for explicit positions without a cache or a one-token step.
        num_slots = None if cache is None else cache[0][0].shape[2]
        num_positions = num_slots
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
            num_positions = num_slots or length
        if length == 1:
            num_positions = None
        if attention_mask is None:
            attention_mask = jnp.ones((b, length), bool)
        embedding = _Embedder(c, name="embedder")()
        x = jnp.take(embedding, tokens, axis=0).astype(dt)
        if c.scale_embeddings:
            x = x * jnp.asarray(math.sqrt(c.d_model), dt)
        x = nn.with_logical_constraint(x, (ax.ACT_BATCH, ax.ACT_LENGTH, ax.ACT_EMBED))

        masks, ropes = {}, {}
        block_cls = Block
        if c.remat != "none":
            block_cls = nn.remat(Block, policy=_remat_policy(c.remat), static_argnums=())
        # Causal self-attention over right-padded rows (no cache, or a prefill that fills a
        # cache of exactly L slots): fused attention kernels take per-row lengths instead.
        kv_lengths = None
        fills_cache = isinstance(cache_index, int) and cache_index == 0 and num_slots == length
        if c.attention_impl != "xla" and (cache is None or fills_cache):
            kv_lengths = attention_mask.astype(jnp.int32).sum(axis=-1)
        new_cache = []
        for i in range(c.num_layers):
            is_global = c.is_global_layer(i)
            window = None if is_global else c.sliding_window
            if window not in masks:
                masks[window] = attention_mask_for(
                    attention_mask, positions, window, cache_index, num_slots
                )
            if is_global not in ropes:
                ropes[is_global] = rope_tables(c, positions, is_global, num_positions)
            layer_cache = None if cache is None else cache[i]
            x, lc = block_cls(c, is_global, name=f"layers_{i}")(
                x, ropes[is_global], masks[window], layer_cache, cache_index, kv_lengths
            )
            new_cache.append(lc)
        x = RMSNorm(c.norm_eps, c.norm_plus_one, dt, pdt, name="final_norm")(x)

        if logits_positions is not None:
            idx = logits_positions.astype(jnp.int32)
            if idx.ndim == 1:
                x = jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]  # [B, D]
            else:
                x = jnp.take_along_axis(x, idx[:, :, None], axis=1)  # [B, T, D]

        if self.head == "scalar":
            kernel = _ScoreHead(c, name="score_head")()
            out = (x.astype(jnp.float32) @ kernel.astype(jnp.float32))[..., 0]
        else:
            if c.tie_embeddings:
                kernel = embedding.T  # [D, V]
            else:
                kernel = _Unembed(c, name="unembed")()
            logits = project(x, kernel.astype(dt), 1, jnp.float32)
            if c.logit_softcap is not None:
                logits = c.logit_softcap * jnp.tanh(logits / c.logit_softcap)
            out = logits
        return out, (tuple(new_cache) if cache is not None else None)


class _Embedder(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self):
        c = self.config
        return self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (ax.VOCAB, ax.EMBED)),
            (c.vocab_size, c.d_model),
            jnp.dtype(c.param_dtype),
        )


class _Unembed(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self):
        c = self.config
        return self.param(
            "kernel",
            _dense_init((ax.EMBED, ax.VOCAB), c.d_model),
            (c.d_model, c.vocab_size),
            jnp.dtype(c.param_dtype),
        )


class _ScoreHead(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self):
        c = self.config
        return self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.zeros, (ax.EMBED, None)),
            (c.d_model, 1),
            jnp.dtype(c.param_dtype),
        )

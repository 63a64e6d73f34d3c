"""Param trees for a config: the init function, LM -> scalar-head copies, depth growth, KV caches.

Mesh-free: params placed on a mesh (born sharded, abstract, imported) come from
`rlaif_jax.sharding.model_params`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlaif_jax.models.config import ModelConfig
from rlaif_jax.models.transformer import KVCache, Transformer

PyTree = Any


def init_fn(config: ModelConfig, head: str = "lm"):
    """`init(rng) -> boxed params` of `Transformer(config, head)` (leaves carry their
    logical axis names; `sharding.model_params` places them on a mesh)."""
    model = Transformer(config, head)

    def init(rng):
        tokens = jnp.zeros((1, 8), jnp.int32)
        return model.init(rng, tokens)["params"]

    return init


def lm_to_scalar_params(lm_params: PyTree, scalar_params: PyTree) -> PyTree:
    """A scalar-head tree whose trunk is copied from an LM tree (RM / value init from SFT).

    Trunk leaves come from `lm_params`; `score_head` (absent in an LM) from `scalar_params`;
    `unembed` (absent in a scalar model) is dropped.
    """
    out = {k: v for k, v in lm_params.items() if k != "unembed"}
    out["score_head"] = scalar_params["score_head"]
    missing = set(scalar_params) - set(out)
    if missing:
        raise ValueError(f"LM params lack trunk entries {sorted(missing)} of the scalar model.")
    return out


# The kernels that write a block's output into the residual stream.
_RESIDUAL_WRITERS = (("attn", "o", "kernel"), ("mlp", "down", "kernel"))


def _layer_names(params: PyTree) -> list[str]:
    return sorted((k for k in params if k.startswith("layers_")), key=lambda k: int(k[7:]))


def grow_depth(shallow_params: PyTree, deep_params: PyTree) -> PyTree:
    """A deeper tree computing the same function as a shallower one (depth growth).

    `shallow_params` has layers_0..n-1, `deep_params` (freshly initialised) layers_0..m-1
    with m >= n and otherwise the same shapes. The result keeps every shallow leaf, appends
    deep layers n..m-1 on top with the kernels that write into the residual stream
    (attn/o [H, Dh, D], mlp/down [F, D]) zeroed, so each new block starts as the identity
    and the grown model's outputs equal the shallow model's until training moves them.
    Needs a config without post-block norms (a zero branch output stays zero without them).
    """
    shallow, deep = _layer_names(shallow_params), _layer_names(deep_params)
    if len(shallow) > len(deep) or set(shallow_params) - set(deep_params):
        raise ValueError(
            f"grow_depth: cannot grow {len(shallow)} layers into {len(deep)} "
            f"(or the trees differ outside the layers: {sorted(set(shallow_params) - set(deep_params))})."
        )
    out = dict(shallow_params)
    for name in deep[len(shallow) :]:
        block = jax.tree_util.tree_map(lambda x: x, deep_params[name])  # a fresh dict tree
        for path in _RESIDUAL_WRITERS:
            parent = block
            for key in path[:-1]:
                parent = parent[key]
            w = parent[path[-1]]
            parent[path[-1]] = jax.device_put(jnp.zeros(w.shape, w.dtype), w.sharding)
        out[name] = block
    return out


def init_cache(config: ModelConfig, batch: int, num_slots: int, dtype=None) -> KVCache:
    """Zeroed KV cache: per layer (k, v) each [B, K, S, Dh] in the compute dtype (heads
    before slots: a decode step's attention reads it as a batched matmul over (B, K)
    without copying it)."""
    dt = jnp.dtype(dtype or config.dtype)
    shape = (batch, config.num_kv_heads, num_slots, config.head_dim)
    return tuple((jnp.zeros(shape, dt), jnp.zeros(shape, dt)) for _ in range(config.num_layers))


def apply(config: ModelConfig, params: PyTree, tokens, head: str = "lm", **kwargs):
    """`Transformer(config, head).apply` on a plain params tree: returns (out, cache)."""
    return Transformer(config, head).apply({"params": params}, tokens, **kwargs)


def unbox(tree: PyTree) -> PyTree:
    return nn.unbox(tree)

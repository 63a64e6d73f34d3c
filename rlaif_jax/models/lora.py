"""LoRA (Hu et al. 2021): low-rank adapters on a frozen base, as a separate param tree.

The adapters of a projection named NAME (a `_Proj` scope of `models.layers`: attention
q/k/v/o, MLP gate/up/down) live at the base kernel's path less 'kernel':
`layers_{i}/attn/q/{a, b}`, with

    a [in..., r]   (the kernel's input dims: D for q/k/v/gate/up, (H, Dh) for o, F for down)
    b [r, out...]  (its output dims: (H|K, Dh) for q/k/v, D for o/down, F for gate/up)

and the logical axis names of the kernel's dims (the rank dim is replicated), so an
adapter shards like its base kernel under any rules table. The model reads them from the
'lora' variable collection: `Transformer.apply(variables(base, adapters, cfg), ...)`
computes y = x·W + (alpha/r)·(x·a)·b at each adapted projection (`adapt`), never the
[in, out] product. B starts at zero, so a fresh adapter leaves the base function exact.
`merge` folds them into the kernels: W + (alpha/r)·a·b (export, sampling).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlaif_jax.models.config import ModelConfig

PyTree = Any

COLLECTION = "lora"
# Projection name -> (parent module, number of leading input dims of its kernel).
TARGETS: dict[str, tuple[str, int]] = {
    "q": ("attn", 1),
    "k": ("attn", 1),
    "v": ("attn", 1),
    "o": ("attn", 2),
    "gate": ("mlp", 1),
    "up": ("mlp", 1),
    "down": ("mlp", 1),
}
ALL_TARGETS = tuple(TARGETS)


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """rank r, alpha (the update is scaled by alpha / r) and the projections adapted
    (names of `TARGETS`: 'q', 'k', 'v', 'o', 'gate', 'up', 'down')."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ALL_TARGETS

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))  # config files give lists
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRAConfig.rank = {self.rank!r} must be a positive int.")
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown or not self.targets:
            raise ValueError(
                f"LoRAConfig.targets = {self.targets!r}: unknown {unknown}; name at least one "
                f"of {ALL_TARGETS}."
            )

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank


def _kernels(tree: PyTree, targets: tuple[str, ...]):
    """(path of the projection, its kernel leaf) for each targeted kernel of a base tree."""
    for name, layer in tree.items():
        if not name.startswith("layers_"):
            continue
        for target in targets:
            parent, _ = TARGETS[target]
            proj = layer.get(parent, {}).get(target)
            if proj is not None:
                yield (name, parent, target), proj["kernel"]


def init_fn(config: ModelConfig, lora: LoRAConfig):
    """`init(rng) -> boxed adapter tree` (leaves are `nn.Partitioned` with the base
    kernel's logical names; place it with `sharding.partition.init_sharded`).

    a ~ N(0, 1/fan_in) (fan_in = the kernel's input size), b = 0."""

    from rlaif_jax.models import model as model_lib  # layers imports this module

    def init(rng):
        base = jax.eval_shape(model_lib.init_fn(config, "lm"), jax.random.PRNGKey(0))
        out: dict = {}
        items = list(_kernels(base, lora.targets))
        keys = jax.random.split(rng, max(len(items), 1))
        for key, ((layer, parent, target), boxed) in zip(keys, items):
            n_in = TARGETS[target][1]
            shape, names = boxed.value.shape, tuple(boxed.names)
            fan_in = math.prod(shape[:n_in])
            a = jax.random.normal(key, (*shape[:n_in], lora.rank), boxed.value.dtype)
            a = a / math.sqrt(fan_in)
            b = jnp.zeros((lora.rank, *shape[n_in:]), boxed.value.dtype)
            out.setdefault(layer, {}).setdefault(parent, {})[target] = {
                "a": nn.Partitioned(a, (*names[:n_in], None)),
                "b": nn.Partitioned(b, (None, *names[n_in:])),
            }
        return out

    return init


def _map_b(adapters: PyTree, fn) -> PyTree:
    return {
        layer: {
            parent: {t: {"a": ab["a"], "b": fn(ab["b"])} for t, ab in projs.items()}
            for parent, projs in mods.items()
        }
        for layer, mods in adapters.items()
    }


def variables(base: PyTree, adapters: PyTree, lora: LoRAConfig) -> dict:
    """The flax variables of the adapted model: {'params': base, 'lora': adapters with b
    pre-scaled by alpha / r} (the scale is applied here so the model needs no config)."""
    return {"params": base, COLLECTION: _map_b(adapters, lambda b: b * lora.scale)}


def adapt(module: nn.Module, name: str, x: jax.Array, y: jax.Array) -> jax.Array:
    """y + (x·a)·b for the child projection `name` of `module` when the 'lora'
    collection holds its adapters, else y unchanged (no adapters: the base model).

    x [..., in...] (the projection's input, compute dtype), y [..., out...] its base
    output; a [in..., r] and b [r, out...] (b already scaled, `variables`)."""
    ab = module.variables.get(COLLECTION, {}).get(name)
    if ab is None:
        return y
    a, b = ab["a"].astype(x.dtype), ab["b"].astype(x.dtype)
    xa = jnp.tensordot(x, a, axes=a.ndim - 1)  # [..., r]: never the [in, out] product
    return y + jnp.tensordot(xa, b, axes=1).astype(y.dtype)


def delta(a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """scale · a·b [in..., out...] (float32) from a [in..., r], b [r, out...]."""
    return scale * jnp.tensordot(a.astype(jnp.float32), b.astype(jnp.float32), axes=1)


def merged_kernels(base: PyTree, adapters: PyTree, lora: LoRAConfig, dtype: Any = None) -> PyTree:
    """{layer: {parent: {projection: W + (alpha/r)·a·b}}} for every adapter: computed in
    float32, stored as `dtype` (default the kernel's own). Jittable."""
    return {
        layer: {
            parent: {
                target: (
                    base[layer][parent][target]["kernel"].astype(jnp.float32)
                    + delta(ab["a"], ab["b"], lora.scale)
                ).astype(dtype or base[layer][parent][target]["kernel"].dtype)
                for target, ab in projs.items()
            }
            for parent, projs in mods.items()
        }
        for layer, mods in adapters.items()
    }


def with_kernels(base: PyTree, kernels: PyTree) -> PyTree:
    """`base` with the kernels of `kernels` (a `merged_kernels` tree) in place of its own;
    every other leaf is the base's own array (no copy)."""
    out = jax.tree.map(lambda x: x, base)  # fresh containers, the same leaves
    for layer, mods in kernels.items():
        for parent, projs in mods.items():
            for target, kernel in projs.items():
                out[layer][parent][target]["kernel"] = kernel
    return out


def merge(base: PyTree, adapters: PyTree, lora: LoRAConfig, dtype: Any = None) -> PyTree:
    """The base tree with every adapted kernel replaced by W + (alpha/r)·a·b (float32
    math, stored as `dtype`, default the kernel's own); every other leaf is the base's
    own array. Jittable; the result computes the function the adapted model computes, up
    to rounding."""
    return with_kernels(base, merged_kernels(base, adapters, lora, dtype))


def kernel_shardings(base: PyTree, adapters: PyTree) -> PyTree:
    """The shardings of the kernels `adapters` adapt (a `merged_kernels`-shaped tree)."""
    return {
        layer: {
            parent: {t: base[layer][parent][t]["kernel"].sharding for t in projs}
            for parent, projs in mods.items()
        }
        for layer, mods in adapters.items()
    }


def num_params(adapters: PyTree) -> int:
    return sum(int(math.prod(x.shape)) for x in jax.tree.leaves(adapters))

"""The trainable state of the shared loop and its layout: `TrainState` (step, params,
optimizer state, RNG; subclasses add fields, e.g. RL's reward statistics), one optimizer
per part of a params dict (`per_part_optimizer`: each part clips its own gradient norm),
optimizer-state shardings that follow the params they mirror, and a state built born
sharded (`create_sharded_state`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rlaif_jax.sharding import partition

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
    """step [] int32, params, opt_state, rng [2] uint32 (raw key data: checkpointable).

    Subclasses add fields the loop checkpoints with the rest (RL: running reward stats);
    `create(params, tx, seed, **extra)` fills them."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params, tx, seed: int = 0, **extra) -> TrainState:
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.PRNGKey(seed),
            tx=tx,
            **extra,
        )


def per_part_optimizer(
    parts: Mapping[str, optax.GradientTransformation],
) -> optax.GradientTransformation:
    """One optimizer per top-level key of a params dict (e.g. {"policy", "value"}).

    Each part sees only its own gradients (`optax.multi_transform`), so a global-norm
    clip inside a part's chain clips that part alone."""

    def labels(params):
        missing = set(params) ^ set(parts)
        if missing:
            raise ValueError(
                f"per_part_optimizer: params parts {sorted(params)} != optimizer parts "
                f"{sorted(parts)}."
            )
        return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()}

    return optax.multi_transform(dict(parts), labels)


def opt_state_shardings(abstract_opt_state, params_structs, params_shardings, mesh):
    """Shardings for an optimizer state: a leaf under a param's path takes that param's
    sharding (Adam moments, Adafactor's unfactored `v`); a factored statistic (Adafactor
    `v_row`/`v_col`: the param's shape less one dim) takes its spec less that dim; counts
    and placeholders are replicated. Matching by path, not by shape alone, keeps e.g. the
    moments of wq [D, H*Dh] and wo [H*Dh, D] on their own layouts when H*Dh == D."""
    rep = partition.replicated(mesh)
    by_path = {}
    for (path, x), s in zip(
        jax.tree_util.tree_leaves_with_path(params_structs), jax.tree.leaves(params_shardings)
    ):
        by_path[tuple(path)] = (tuple(x.shape), s)

    def one(path, leaf):
        path = tuple(path)
        for i in range(len(path)):
            hit = by_path.get(path[i:])
            if hit is None:
                continue
            shape, sharding = hit
            if tuple(leaf.shape) == shape:
                return sharding
            spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
            # v_row drops the later factored dim, v_col the earlier: try in that order.
            dims = range(len(shape) - 1, -1, -1)
            if "v_col" in jax.tree_util.keystr(path):
                dims = range(len(shape))
            for d in dims:
                if shape[:d] + shape[d + 1 :] == tuple(leaf.shape):
                    return NamedSharding(mesh, P(*(spec[:d] + spec[d + 1 :])))
            return rep
        return rep

    return jax.tree_util.tree_map_with_path(one, abstract_opt_state)


def sharded_state_layout(
    params, params_shardings, tx, mesh, seed: int = 0, state_cls: type = TrainState, **extra
):
    """(abstract state, its shardings, create): the layout `create_sharded_state` builds,
    from params or their ShapeDtypeStructs, allocating nothing (memory plans compile the
    step on it). `create(params)` builds the state."""

    def create(p):
        return state_cls.create(p, tx, seed, **extra)

    abstract = jax.eval_shape(create, params)
    rep = partition.replicated(mesh)
    structs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    shardings = jax.tree.map(lambda _: rep, abstract).replace(
        params=params_shardings,
        opt_state=opt_state_shardings(abstract.opt_state, structs, params_shardings, mesh),
    )
    return abstract, shardings, create


def create_sharded_state(
    params, params_shardings, tx, mesh, seed: int = 0, state_cls: type = TrainState, **extra
):
    """(state, its shardings): optimizer state laid out like the params it mirrors
    (see `opt_state_shardings`), step, RNG and extra fields replicated; built by one jit,
    so nothing is ever whole on one device. `state_cls` (a TrainState subclass) and
    `extra` (its added fields' initial values) give e.g. the RL state."""
    _, shardings, create = sharded_state_layout(
        params, params_shardings, tx, mesh, seed, state_cls, **extra
    )
    state = jax.jit(create, out_shardings=shardings)(params)
    return state, shardings

"""Sharding helpers: logical specs -> shardings, born-sharded init, sharded jit, global batches.

Model code annotates params with `nn.with_logical_partitioning` and activations with
`nn.with_logical_constraint`; these helpers turn the logical names into
`NamedSharding`s for a given mesh and rules table (`rlaif_jax.sharding.rules`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rlaif_jax.sharding import axes as ax
from rlaif_jax.sharding.rules import Rules

PyTree = Any

BATCH_MESH_AXES = (ax.DATA, ax.FSDP)


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Activates `mesh` and `rules` so `nn.with_logical_constraint` takes effect."""
    with mesh, nn.logical_axis_rules(rules):
        yield


def logical_to_spec(names: Sequence[str | None], rules: Rules) -> P:
    """Maps a tuple of logical axis names to a mesh PartitionSpec under `rules`."""
    return nn.logical_to_mesh_axes(tuple(names), rules)


def logical_specs(boxed_tree: PyTree) -> PyTree:
    """Logical PartitionSpecs of a (possibly abstract) tree of `nn.Partitioned` boxes."""
    return nn.get_partition_spec(boxed_tree)


def shardings_from_logical(logical_spec_tree: PyTree, mesh: Mesh, rules: Rules) -> PyTree:
    """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_spec_tree, mesh, rules)


def shardings_for(boxed_tree: PyTree, mesh: Mesh, rules: Rules) -> PyTree:
    """NamedShardings for every leaf of an abstract boxed tree (from `jax.eval_shape(init)`)."""
    return shardings_from_logical(logical_specs(boxed_tree), mesh, rules)


def init_sharded(
    init_fn: Callable[..., PyTree], mesh: Mesh, rules: Rules, *args: Any
) -> tuple[PyTree, PyTree]:
    """Initialises params directly into their shardings (never whole on one device).

    `init_fn(*args)` returns a boxed tree (e.g. `model.init`). Returns the unboxed
    params and their NamedShardings: eval_shape -> logical specs -> jit(init,
    out_shardings).
    """
    abstract = jax.eval_shape(init_fn, *args)
    shardings = shardings_for(abstract, mesh, rules)

    def unboxed_init(*a):
        return nn.unbox(init_fn(*a))

    with sharding_context(mesh, rules):
        params = jax.jit(unboxed_init, out_shardings=shardings)(*args)
    return params, shardings


def abstract_params(init_fn: Callable[..., PyTree], mesh: Mesh, rules: Rules, *args: Any):
    """(ShapeDtypeStruct tree with shardings, sharding tree) without allocating anything."""
    abstract = jax.eval_shape(init_fn, *args)
    shardings = shardings_for(abstract, mesh, rules)
    unboxed = nn.unbox(abstract)
    structs = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed, shardings
    )
    return structs, shardings


def jit_sharded(
    fn: Callable[..., Any],
    in_shardings: Any,
    out_shardings: Any,
    donate_argnums: int | Sequence[int] = (),
    static_argnums: int | Sequence[int] = (),
) -> Callable[..., Any]:
    """The one place steps are jitted: `jax.jit` with in/out shardings and donation."""
    return jax.jit(
        fn,
        in_shardings=in_shardings,
        out_shardings=out_shardings,
        donate_argnums=donate_argnums,
        static_argnums=static_argnums,
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading (batch) dim over ('data', 'fsdp'); other dims replicated."""
    return NamedSharding(mesh, P(BATCH_MESH_AXES, *([None] * (ndim - 1))))


def batch_size_divisor(mesh: Mesh) -> int:
    """Number of shards the batch dimension is split into."""
    return mesh.shape[ax.DATA] * mesh.shape[ax.FSDP]


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Builds global arrays from each process's local slice of a batch.

    Every process passes its own rows (leading dim = global batch / process count);
    the result is one global `jax.Array` per feature, batch-sharded over
    ('data', 'fsdp'). On one process it is simply a sharded device_put.
    """
    out = {}
    for name, value in local_batch.items():
        value = np.asarray(value)
        sharding = batch_sharding(mesh, value.ndim)
        out[name] = jax.make_array_from_process_local_data(sharding, value)
    return out


def process_slice(global_batch_size: int) -> slice:
    """Rows of a global batch that belong to this process (contiguous blocks)."""
    n, i = jax.process_count(), jax.process_index()
    if global_batch_size % n:
        raise ValueError(f"Global batch {global_batch_size} is not divisible by {n} processes.")
    per = global_batch_size // n
    return slice(i * per, (i + 1) * per)


def global_batch_from_full(
    full_batch: Mapping[str, np.ndarray], mesh: Mesh
) -> dict[str, jax.Array]:
    """`global_batch` for a batch every process holds in full (the same rows on each):
    each process contributes its `process_slice` of it."""
    rows = process_slice(len(next(iter(full_batch.values()))))
    return global_batch({k: np.asarray(v)[rows] for k, v in full_batch.items()}, mesh)

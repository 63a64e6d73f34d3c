"""Where a model role lives: its own mesh over all devices or a subset, its own rules
table and param dtype, and moves of its arrays between placements and memory kinds.

A stage holds several roles (RL: policy, value, anchor, reward or labeler). By default
they share the stage's mesh and rules (colocated); a `RolePlacement` puts one role on
devices [start, stop) of `jax.devices()` with mesh degrees (data, fsdp, tensor) and a
rules table of `rules.TABLES`, e.g. the policy on devices 0-3 and the labeler on 4-7.
Arrays move between placements with `jax.device_put` (`reshard`), and idle roles can
wait in host memory (`to_host` / `to_device`) where the backend has a host memory kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding

from rlaif_jax.sharding import axes as ax
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding.rules import Rules

PyTree = Any

PARAM_DTYPES = ("float32", "bfloat16")
HOST_MEMORY_KIND = "pinned_host"


@dataclasses.dataclass(frozen=True)
class RolePlacement:
    """The devices, layout and storage of one role.

    devices: (start, stop) indices into `jax.devices()` (None = every device).
    data / fsdp / tensor: mesh degrees over those devices (-1 = the rest).
    rules: a rules table name ('dp' | 'fsdp' | 'fsdp_tp'; None = the stage's rules).
    param_dtype: storage dtype of the role's params ('float32' | 'bfloat16'; None = the
        stage's default for the role: the artifact's for trainable roles).
    remat: 'none' | 'full' | 'dots' for a trainable role's backward pass (None = the
        model config's).
    offload: keep the role's params in host memory while it is idle (frozen roles; RL's
        value model: its params and optimizer state while the policy samples).
    """

    devices: tuple[int, int] | None = None
    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: str | None = None
    param_dtype: str | None = None
    remat: str | None = None
    offload: bool = False

    def __post_init__(self):
        if isinstance(self.devices, list):  # a list from a config file
            object.__setattr__(self, "devices", tuple(self.devices))
        if self.devices is not None:
            start, stop = self.devices
            if not 0 <= start < stop:
                raise ValueError(
                    f"RolePlacement.devices = {self.devices!r}: need 0 <= start < stop."
                )
        if self.rules is not None and self.rules not in rules_lib.TABLES:
            raise ValueError(
                f"RolePlacement.rules = {self.rules!r}: choose one of {sorted(rules_lib.TABLES)}."
            )
        if self.param_dtype is not None and self.param_dtype not in PARAM_DTYPES:
            raise ValueError(
                f"RolePlacement.param_dtype = {self.param_dtype!r}: use one of {PARAM_DTYPES}."
            )
        if self.remat is not None and self.remat not in ("none", "full", "dots"):
            raise ValueError(f"RolePlacement.remat = {self.remat!r}: use 'none', 'full' or 'dots'.")

    def device_range(self, num_devices: int) -> range:
        """Indices of the role's devices among `num_devices`."""
        if self.devices is None:
            return range(num_devices)
        start, stop = self.devices
        if stop > num_devices:
            raise ValueError(
                f"RolePlacement.devices = {self.devices!r} but there are {num_devices} devices."
            )
        return range(start, stop)

    def degrees(self, num_devices: int) -> tuple[int, int, int]:
        return mesh_lib.resolve_degrees(
            len(self.device_range(num_devices)), self.data, self.fsdp, self.tensor
        )


def role_mesh(placement: RolePlacement, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The concrete mesh of `placement` over `devices` (default `jax.devices()`)."""
    devs = list(jax.devices()) if devices is None else list(devices)
    chosen = [devs[i] for i in placement.device_range(len(devs))]
    d, f, t = placement.degrees(len(devs))
    if len(chosen) == len(devs):
        return mesh_lib.make_mesh(d, f, t, devices=None if devices is None else chosen)
    return mesh_lib.make_mesh(d, f, t, devices=chosen)


def abstract_role_mesh(placement: RolePlacement, num_devices: int) -> AbstractMesh:
    """The role's mesh as shapes only (planning for hardware that is not here)."""
    shape = placement.degrees(num_devices)
    return AbstractMesh(shape, ax.MESH_AXES, axis_types=(AxisType.Auto,) * len(shape))


def role_rules(placement: RolePlacement | None, default: Rules) -> Rules:
    """The placement's rules table, or the stage's."""
    if placement is None or placement.rules is None:
        return default
    return rules_lib.get_rules(placement.rules)


def mesh_device_ids(mesh: Mesh | AbstractMesh, offset: int = 0) -> tuple[int, ...]:
    """Device ids of a concrete mesh; for an abstract one, offset .. offset + size."""
    if isinstance(mesh, Mesh):
        return tuple(int(d.id) for d in np.asarray(mesh.devices).flat)
    return tuple(range(offset, offset + int(np.prod(list(mesh.shape.values())))))


def same_devices(a: Mesh, b: Mesh) -> bool:
    return set(mesh_device_ids(a)) == set(mesh_device_ids(b))


def reshard(tree: PyTree, shardings: PyTree) -> PyTree:
    """Moves `tree` to `shardings` (another mesh, rules or memory kind): jax.device_put."""
    return jax.device_put(tree, shardings)


def cast(tree: PyTree, dtype: str | None) -> PyTree:
    """Floating leaves of `tree` cast to `dtype` in place of their shardings (None = as is)."""
    if dtype is None:
        return tree
    target = np.dtype(jax.numpy.dtype(dtype))

    def one(x):
        if not jax.numpy.issubdtype(x.dtype, jax.numpy.floating) or x.dtype == target:
            return x
        return x.astype(target)

    shardings = jax.tree.map(lambda x: x.sharding, tree)
    return jax.jit(lambda t: jax.tree.map(one, t), out_shardings=shardings, donate_argnums=0)(tree)


def host_memory_kind(mesh: Mesh) -> str | None:
    """'pinned_host' when every device of `mesh` has that memory kind, else None."""
    for d in np.asarray(mesh.devices).flat:
        try:
            kinds = {m.kind for m in d.addressable_memories()}
        except Exception:  # a backend without memory spaces
            return None
        if HOST_MEMORY_KIND not in kinds:
            return None
    return HOST_MEMORY_KIND


def _with_kind(tree: PyTree, kind: str | None) -> PyTree:
    def one(x):
        s = x.sharding
        if not isinstance(s, NamedSharding):
            raise ValueError(f"offload needs NamedSharding arrays, got {type(s).__name__}")
        return s.with_memory_kind(kind)

    return jax.tree.map(one, tree)


def to_host(tree: PyTree) -> PyTree:
    """The same arrays in host memory (same shardings, memory kind 'pinned_host'); the
    tree as it is where the backend has no host memory kind."""
    leaves = jax.tree.leaves(tree)
    if not leaves or host_memory_kind(leaves[0].sharding.mesh) is None:
        return tree
    return jax.device_put(tree, _with_kind(tree, HOST_MEMORY_KIND))


def to_device(tree: PyTree) -> PyTree:
    """The same arrays back in device memory (the devices' default memory kind)."""
    leaves = jax.tree.leaves(tree)
    if not leaves or leaves[0].sharding.memory_kind in (None, "device"):
        return tree
    return jax.device_put(tree, _with_kind(tree, "device"))

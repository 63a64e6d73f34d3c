"""Device mesh construction with axes ('data', 'fsdp', 'tensor')."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from rlaif_jax.sharding import axes as ax


def resolve_degrees(num_devices: int, data: int, fsdp: int, tensor: int) -> tuple[int, int, int]:
    """Fills in one -1 degree with the devices that remain; checks the product."""
    degrees = [data, fsdp, tensor]
    unknown = [i for i, d in enumerate(degrees) if d == -1]
    if len(unknown) > 1:
        raise ValueError(
            f"At most one mesh degree may be -1, got data={data} fsdp={fsdp} tensor={tensor}."
        )
    known = math.prod(d for d in degrees if d != -1)
    if any(d == 0 or d < -1 for d in degrees):
        raise ValueError(f"Mesh degrees must be positive or -1, got {degrees}.")
    if unknown:
        if num_devices % known:
            raise ValueError(
                f"{num_devices} devices cannot be split with fixed degrees {degrees} (product {known})."
            )
        degrees[unknown[0]] = num_devices // known
    if math.prod(degrees) != num_devices:
        raise ValueError(
            f"Mesh degrees data={degrees[0]} fsdp={degrees[1]} tensor={degrees[2]} multiply to "
            f"{math.prod(degrees)}, but there are {num_devices} devices (make_mesh.data / .fsdp / .tensor)."
        )
    return tuple(degrees)  # type: ignore[return-value]


def make_mesh(
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """Builds a Mesh of shape (data, fsdp, tensor); -1 takes all remaining devices.

    Uses `jax.make_mesh` (topology-aware device order on TPU) when all devices are
    used, a plain reshape for an explicit device list (tests).
    """
    devs = list(jax.devices()) if devices is None else list(devices)
    shape = resolve_degrees(len(devs), data, fsdp, tensor)
    # Auto axes: shardings come from logical rules + jit in/out shardings (t5x style);
    # recent jax.make_mesh defaults to Explicit axes, which this codebase does not use.
    axis_types = (AxisType.Auto,) * len(ax.MESH_AXES)
    if devices is None:
        try:
            return jax.make_mesh(shape, ax.MESH_AXES, axis_types=axis_types, devices=devs)
        except (TypeError, ValueError, NotImplementedError):  # unusual topology: plain order
            pass
    return Mesh(np.asarray(devs).reshape(shape), ax.MESH_AXES, axis_types=axis_types)


def local_mesh(mesh: Mesh) -> Mesh:
    """The part of `mesh` on this process's devices, with the same axes: the mesh of a
    model every host holds whole (the labeler: each host labels its own shards). The
    mesh itself in one process. The local devices must form a sub-block of the mesh (as
    jax also needs for host-local inputs), e.g. one host's slice of the 'data' or 'fsdp'
    axis."""
    if not mesh.is_multi_process:
        return mesh
    try:
        devices = mesh.local_mesh.devices
    except ValueError as e:
        raise ValueError(
            f"The devices of process {jax.process_index()} are not a sub-block of the mesh "
            f"{dict(mesh.shape)}, so no host-local mesh has its axes; choose degrees that "
            "split along hosts (make_mesh.data or make_mesh.fsdp a multiple of the process "
            "count)."
        ) from e
    return Mesh(devices, mesh.axis_names, axis_types=mesh.axis_types)

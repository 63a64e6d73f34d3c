"""sharding/placement.py and rl/placement.py: role meshes over device subsets, moves between
placements and memory kinds, and how rl.placements resolve (issue 21.2 / 21.4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.rl import placement as rl_placement
from rlaif_jax.rl import rewards
from rlaif_jax.sharding import memory, partition
from rlaif_jax.sharding import placement as placement_lib
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.placement import RolePlacement
from rlaif_jax.sharding.rules import get_rules


def test_role_mesh_over_a_device_subset_and_resharding_between_placements():
    a = placement_lib.role_mesh(RolePlacement(devices=(0, 4), data=1, fsdp=-1))
    b = placement_lib.role_mesh(RolePlacement(devices=(4, 8), data=2, fsdp=2))
    assert placement_lib.mesh_device_ids(a) == (0, 1, 2, 3)
    assert placement_lib.mesh_device_ids(b) == (4, 5, 6, 7) and dict(b.shape)["data"] == 2
    assert not placement_lib.same_devices(a, b)
    x = jax.device_put(jnp.arange(32.0).reshape(8, 4), partition.batch_sharding(a, 2))
    y = placement_lib.reshard(x, partition.batch_sharding(b, 2))
    assert {s.device.id for s in y.addressable_shards} == {4, 5, 6, 7}
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    # Per-device bytes: 8 rows over 2 ('data' x 'fsdp' = 4) shards of 2 rows x 4 floats.
    assert memory.leaf_bytes_per_device(y) == 2 * 4 * 4
    assert memory.allocated_bytes_per_device(y) == {i: 32 for i in range(4, 8)}


def test_abstract_role_mesh_gives_shard_shapes_without_devices():
    mesh = placement_lib.abstract_role_mesh(RolePlacement(data=1, fsdp=-1), 32)
    struct = jax.ShapeDtypeStruct(
        (256000, 2304), jnp.float32, sharding=jax.sharding.NamedSharding(mesh, jax.P("fsdp"))
    )
    assert memory.leaf_bytes_per_device(struct) == 8000 * 2304 * 4


def test_bad_placements_name_the_field():
    with pytest.raises(ValueError, match=r"RolePlacement.devices = \(4, 2\)"):
        RolePlacement(devices=(4, 2))
    with pytest.raises(ValueError, match=r"RolePlacement.rules = 'zero'"):
        RolePlacement(rules="zero")
    with pytest.raises(ValueError, match="there are 8 devices"):
        placement_lib.role_mesh(RolePlacement(devices=(4, 12)))
    mesh, rules = make_mesh(), get_rules()
    with pytest.raises(ValueError, match=r"unknown roles \['critic'\]"):
        rl_placement.resolve({"critic": RolePlacement()}, mesh, rules, "float32")
    with pytest.raises(ValueError, match=r"rl.placements\['value'\]: param_dtype"):
        rl_placement.resolve({"value": RolePlacement(param_dtype="bfloat16")}, mesh, rules, "f")
    with pytest.raises(ValueError, match=r"rl.placements\['anchor'\].remat"):
        rl_placement.resolve({"anchor": RolePlacement(remat="full")}, mesh, rules, "float32")


def test_resolve_defaults_frozen_roles_to_bf16_and_keeps_colocated_runs_as_they_were():
    mesh, rules = make_mesh(), get_rules("fsdp")
    plain = rl_placement.resolve(None, mesh, rules, "float32")
    assert plain.learner.mesh is mesh and plain.reward.mesh is mesh
    assert (plain.anchor_dtype, plain.reward_dtype, plain.offload_reward) == (
        "float32",
        None,
        False,
    )
    placed = rl_placement.resolve(
        {
            "policy": RolePlacement(devices=(0, 4), remat="full"),
            "value": RolePlacement(remat="dots"),
            "anchor": RolePlacement(rules="dp"),
            "labeler": RolePlacement(devices=(4, 8), offload=True),
        },
        mesh,
        rules,
        "float32",
        "labeler",
    )
    assert placement_lib.mesh_device_ids(placed.learner.mesh) == (0, 1, 2, 3)
    assert placement_lib.mesh_device_ids(placed.reward.mesh) == (4, 5, 6, 7)
    assert (placed.anchor_dtype, placed.reward_dtype) == ("bfloat16", "bfloat16")
    assert placed.anchor_rules == get_rules("dp") and placed.offload_reward
    from rlaif_jax.models.config import get_config

    config = get_config("tiny")
    assert placed.policy_config(config).remat == "full"
    assert placed.value_config(config).remat == "dots"


class _Holder:
    """A reward with params, like RewardModelReward: sums its params into each score."""

    def __init__(self, params):
        self.params = params
        self.kinds = []

    def __call__(self, contexts, responses):
        self.kinds.append(self.params["w"].sharding.memory_kind)
        return np.full(len(contexts), float(jnp.sum(self.params["w"])), np.float32)


def test_offloaded_reward_waits_in_host_memory_between_calls():
    mesh = placement_lib.role_mesh(RolePlacement(devices=(4, 8)))
    w = jax.device_put(jnp.ones((8, 4)), partition.batch_sharding(mesh, 2))
    inner = _Holder({"w": w})
    fn = rewards.OffloadedReward(inner)
    host = placement_lib.host_memory_kind(mesh)
    assert host == "pinned_host"  # CPU devices have host memory kinds
    assert inner.params["w"].sharding.memory_kind == host  # idle: on the host
    np.testing.assert_array_equal(fn(["a", "b"], ["x", "y"]), [32.0, 32.0])
    assert inner.kinds == ["device"]  # scored from device memory
    assert inner.params["w"].sharding.memory_kind == host  # and back to the host
    with pytest.raises(ValueError, match="RolePlacement.offload"):
        rewards.OffloadedReward(lambda c, r: np.zeros(len(c)))

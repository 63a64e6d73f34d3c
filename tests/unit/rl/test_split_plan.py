"""rl/plan.py on split placements (issue 21.1 / 21.2, gin/placement/split_roles.gin): the
value model (params, optimizer state, its score pass and update) and the anchor (its
dtype, its score pass) are planned on their own devices, and so is the reward role.

Eight fake devices: the policy on 0-3 (fsdp), value / anchor / reward on 4-7. The plan's
resident bytes per device equal, byte for byte, what the placed RL setup allocates there (the stage's
own `roles.build_roles`, `placement.place_roles`, `learner.create_state(value_mesh=)`);
the phases on 4-7 compile from the learner's own per-device-set programs; a capacity
that fits 0-3 but not 4-7 is refused naming the value / anchor roles and devices 4-7."""

from __future__ import annotations

import jax
import pytest

from rlaif_jax.models.config import get_config
from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.rl import placement as rl_placement
from rlaif_jax.rl import roles as roles_lib
from rlaif_jax.rl.runner import RLSettings, make_optimizer
from rlaif_jax.sharding import memory, model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.placement import RolePlacement
from rlaif_jax.sharding.rules import get_rules

SETTINGS = RLSettings(batch_size=8, samples_per_prompt=2, microbatches=2)
LP, T = 24, 8
POLICY, ROLES = set(range(4)), set(range(4, 8))


class _Layout:
    max_context, max_response = LP, T


def _placements(offload: bool) -> dict[str, RolePlacement]:
    """gin/placement/split_roles.gin's placements (offload as given)."""
    split = dict(devices=(4, 8), data=1, fsdp=-1, rules="fsdp", offload=offload)
    return {
        "policy": RolePlacement(devices=(0, 4), data=1, fsdp=-1, rules="fsdp"),
        "value": RolePlacement(**split),
        "anchor": RolePlacement(**split),
        "reward": RolePlacement(devices=(4, 8), data=-1, rules="dp", offload=offload),
    }


def _plan(config, offload=False, capacity_gb=None, compile=True):
    rp = rl_placement.resolve(
        _placements(offload), make_mesh(-1, 1, 1), get_rules("dp"), SETTINGS.anchor_dtype
    )
    spec = memory.ScoringRoleSpec(
        "reward", config.replace(param_dtype=rp.reward_dtype), "scalar", 8, LP + T
    )
    settings = memory.MemoryPlanSettings(capacity_gb=capacity_gb, compile=compile)
    tx = make_optimizer(SETTINGS)
    return rp, rl_placement.memory_plan(config, SETTINGS, _Layout, rp, tx, spec, settings)


def test_split_plan_matches_the_placed_allocation_per_device():
    config = get_config("tiny")
    rp, plan = _plan(config)
    roles = {r.role: r for r in plan.roles}
    assert set(roles["policy"].devices) == POLICY
    for role in ("value", "anchor", "reward"):
        assert set(roles[role].devices) == ROLES, role
    phases = {p.phase: p for p in plan.phases}
    assert set(phases) == {"sample", "score", "update", "value + anchor score", "value update",
                           "reward"}  # fmt: skip
    assert phases["score"].roles == ("policy",) and phases["update"].roles == ("policy",)
    for name in ("value + anchor score", "value update", "reward"):
        assert set(phases[name].devices) == ROLES, name
    assert all(p.source == "compiled" for p in plan.phases)
    assert plan.device_ids() == list(range(8))

    # What the RL stage allocates on this placement.
    mesh, rules = rp.learner.mesh, rp.learner.rules
    sft, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, rules, "lm")
    placed = roles_lib.build_roles(config, sft, mesh, rules, rp.anchor_dtype)
    placed = rl_placement.place_roles(placed, config, rp)
    state, _ = learner_lib.create_state(
        placed.params, placed.param_shardings, make_optimizer(SETTINGS), mesh, 0,
        value_mesh=rp.value.mesh,
    )  # fmt: skip
    reward, _ = model_params.init_params(
        config.replace(param_dtype=rp.reward_dtype), jax.random.PRNGKey(1), rp.reward.mesh,
        rp.reward.rules, "scalar",
    )  # fmt: skip
    trainable = {"params": state.params, "opt_state": state.opt_state}
    allocated = memory.allocated_bytes_per_device((trainable, placed.anchor, reward))
    per_device = plan.per_device()
    assert set(allocated) == set(per_device)
    for d, v in per_device.items():
        assert v["resident"] == allocated[d], d  # byte for byte
    # The learner's devices hold none of the value's or the anchor's bytes.
    assert per_device[0]["roles"] == ["policy"]
    assert per_device[4]["roles"] == ["value", "anchor", "reward"]
    assert roles["anchor"].params * 2 == pytest.approx(roles["policy"].params, rel=0.01)


def test_a_capacity_for_the_policy_devices_only_is_refused_naming_value_and_anchor():
    config = get_config("tiny")
    _, plan = _plan(config, compile=False)
    per_device = plan.per_device()
    learner_peak = max(per_device[d]["total"] for d in POLICY)
    roles_peak = min(per_device[d]["total"] for d in ROLES)
    assert roles_peak > learner_peak  # value + opt state, anchor and a replicated RM
    budget = (learner_peak + roles_peak) / 2
    _, tight = _plan(config, capacity_gb=budget / 0.9 / memory.GB, compile=False)
    assert set(tight.over()) == ROLES
    with pytest.raises(memory.MemoryPlanError) as e:
        tight.check()
    msg = str(e.value)
    assert "devices 4-7 need" in msg and "(roles value, anchor, reward;" in msg
    assert "devices 0-3" not in msg.split("\n")[0]


def test_offloaded_roles_are_resident_for_their_own_phases_only():
    config = get_config("tiny")
    _, kept = _plan(config, compile=False)
    _, offloaded = _plan(config, offload=True, compile=False)
    exclusive = {r.role for r in offloaded.roles if r.exclusive}
    assert exclusive == {"value", "anchor"}  # CPU has a pinned_host memory kind
    v_kept, v_off = kept.per_device()[4], offloaded.per_device()[4]
    assert v_off["resident"] < v_kept["resident"]
    assert "reward" in v_off["roles"]  # its offload is not modelled: planned resident
    assert set(v_off["roles"]) < {"value", "anchor", "reward"}
    assert offloaded.per_device()[0] == kept.per_device()[0]

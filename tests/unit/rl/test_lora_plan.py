"""rl/plan.py with LoRA (issue 21.1, gin/method/lora.gin): the plan's per-role bytes
agree with the arrays a LoRA RL stage allocates (`roles.build_roles`,
`learner.create_state`) and with memory_analysis() within 10% on 8 fake devices:
adapters (and the value head) are the trainable params with their optimizer state only,
the anchor is the frozen base counted once, and every phase compiles on abstract inputs
(the LoRA learner, the sampler on the merged kernels). The stage's own path
(`rl.placement.check_memory`, what `rl.run_stage` calls with `rl.lora`) plans the same
adapter-only layout and enforces it."""

from __future__ import annotations

import jax
import pytest

from rlaif_jax.models.config import get_config
from rlaif_jax.models.lora import LoRAConfig
from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.rl import placement as rl_placement
from rlaif_jax.rl import plan as plan_lib
from rlaif_jax.rl import roles as roles_lib
from rlaif_jax.rl.runner import RLSettings, make_optimizer
from rlaif_jax.sharding import memory, model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules
from tests.unit._helpers import analysed_bytes, device0_bytes


def test_lora_plan_matches_a_lora_stage_allocation():
    """Adapters (and the value head) are the trainable params, with their optimizer
    state only; the anchor is the frozen base, counted once."""
    config = get_config("tiny")
    mesh, rules = make_mesh(1, -1, 1), get_rules("fsdp")
    settings = RLSettings(batch_size=8, samples_per_prompt=2)
    tx, lora = make_optimizer(settings), LoRAConfig(rank=4)
    plan = plan_lib.plan_rl(
        config, settings, 24, 8, plan_lib.Side(mesh, rules), tx, anchor_dtype="float32", lora=lora
    )
    planned = {r.role: r for r in plan.roles}
    # What the RL stage allocates with rl.lora (roles.build_roles, learner.create_state).
    sft, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, rules, "lm")
    roles = roles_lib.build_roles(config, sft, mesh, rules, "float32", lora=lora)
    state, _ = learner_lib.create_state(roles.params, roles.param_shardings, tx, mesh, 0)
    for part in ("policy", "value"):
        assert planned[part].params == pytest.approx(device0_bytes(state.params[part]), rel=0.1)
        opt = device0_bytes(state.opt_state, part)
        assert planned[part].opt_state == pytest.approx(opt, rel=0.1), part
        assert planned[part].opt_state == pytest.approx(2 * planned[part].params, rel=0.01)
    assert planned["anchor"].params == pytest.approx(device0_bytes(roles.anchor), rel=0.1)
    assert planned["anchor"].params == pytest.approx(analysed_bytes(roles.anchor), rel=0.1)
    assert planned["policy"].params == pytest.approx(
        analysed_bytes(state.params["policy"]), rel=0.1
    )
    # No second copy of the model anywhere: every planned param is an allocated one.
    assert planned["policy"].params < planned["anchor"].params
    params = sum(planned[r].params for r in ("policy", "value", "anchor"))
    assert params == pytest.approx(
        device0_bytes(state.params) + device0_bytes(roles.anchor), rel=0.1
    )
    trainable = planned["policy"].total + planned["value"].total
    assert trainable == pytest.approx(
        device0_bytes(state.params) + device0_bytes(state.opt_state), rel=0.1
    )
    phases = {p.phase: p for p in plan.phases}
    assert {p.source for p in phases.values()} == {"compiled"}
    # Sampling reads the anchor with the adapted kernels merged (compute dtype): transient.
    assert phases["sample"].io > 0

    # The stage's path (rl.run_stage -> check_memory with rl.lora) plans the same roles:
    # adapter-only optimizer state, and it refuses (not only reports) over capacity.
    rp = rl_placement.resolve(None, mesh, rules, "float32")

    def stage_plan(capacity_gb=None):
        return rl_placement.check_memory(
            config, settings, _Layout, rp, _host_reward, "unused", None,
            memory.MemoryPlanSettings(capacity_gb=capacity_gb, compile=False), lora=lora,
        )  # fmt: skip

    staged = {r.role: r for r in stage_plan().roles}
    for role in ("policy", "value", "anchor"):
        assert staged[role] == planned[role], role
    assert staged["policy"].opt_state == device0_bytes(state.opt_state, "policy")
    with pytest.raises(memory.MemoryPlanError, match="roles policy, value, anchor"):
        stage_plan(capacity_gb=planned["anchor"].params / 1e9)


class _Layout:
    max_context, max_response = 24, 8


def _host_reward(workdir, mesh, rules, task=None):
    """A reward builder without a spec (a host-side reward: no role in the plan)."""
    raise AssertionError("a plan builds no reward")

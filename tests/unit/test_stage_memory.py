"""sharding/stage_memory.py: the memory plan of every stage (issue 21.1).

The per-role bytes of the sft / reward (trainee), label (labeler) and evaluate (policies,
judge) plans agree with the arrays the stages' own code allocates and with
memory_analysis() within 10%, on the tiny and toy presets over 8 fake devices; the
train step's temporaries are memory_analysis() of the loop's own jitted step; a
sampler's KV cache is exact; evaluate's models, loaded one at a time, peak alone.
(LoRA RL: tests/unit/rl/test_lora_plan.py; refusals and `rlaif-jax plan` over a
pipeline: tests/unit/test_plan_cli.py.)
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import rlaif_jax.toy.presets  # noqa: F401  (registers toy_policy)
from rlaif_jax import reward
from rlaif_jax.models.config import get_config
from rlaif_jax.sharding import memory, model_params, partition, phase_memory, stage_memory
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules
from rlaif_jax.train import loop, optim
from rlaif_jax.train import state as train_state
from rlaif_jax.train.losses import lm_loss
from tests.unit._helpers import analysed_bytes, device0_bytes

B, L = 16, 32


def _lm_batch() -> dict[str, np.ndarray]:
    ones = np.ones((B, L), np.int32)
    return {"tokens": ones, "attention_mask": ones, "loss_mask": ones.astype(np.float32)}


def _pair_batch() -> dict[str, np.ndarray]:
    ones, lens = np.ones((B, L), np.int32), np.full((B,), L, np.int32)
    return {"tokens1": ones, "lengths1": lens, "tokens2": ones, "lengths2": lens,
            "label": np.full((B,), 0.5, np.float32)}  # fmt: skip


@pytest.mark.parametrize(
    "preset, mesh_shape, rules, head, compile",
    [("tiny", (-1, 1, 1), "dp", "lm", True), ("toy_policy", (2, 4, 1), "fsdp", "scalar", False)],
)
def test_trainee_plan_matches_allocation_and_the_compiled_step(
    preset, mesh_shape, rules, head, compile
):
    """sft (LM head, Adafactor: factored moments) and reward (scalar head, Adam); the
    step compiled once (the tiny case: both compilations are most of this file's time)."""
    config = get_config(preset)
    mesh, rules = make_mesh(*mesh_shape), get_rules(rules)
    side = phase_memory.Side(mesh, rules)
    if head == "lm":
        tx, loss, local = optim.make_optimizer(), functools.partial(lm_loss, config), _lm_batch()
    else:
        tx = optim.make_optimizer("adam")
        loss, local = functools.partial(reward.rm_loss, config), _pair_batch()
    batch = phase_memory.batch_structs(local, side)
    role, step = phase_memory.trainee_rows(
        "trainee", config, head, loss, batch, tx, side, microbatches=2, compile=compile
    )
    # What train.supervised allocates: born-sharded params, then the sharded state.
    params, shardings = model_params.init_params(config, jax.random.PRNGKey(0), mesh, rules, head)
    state, state_sh = train_state.create_sharded_state(params, shardings, tx, mesh)
    assert role.params == pytest.approx(device0_bytes(state.params), rel=0.1)
    assert role.params == pytest.approx(analysed_bytes(state.params), rel=0.1)
    assert role.opt_state == pytest.approx(device0_bytes(state.opt_state), rel=0.1)
    assert role.opt_state == pytest.approx(analysed_bytes(state.opt_state), rel=0.1)
    if not compile:
        assert step.source == "analytic" and step.temp > 0
        return
    # The step's temporaries: memory_analysis() of the loop's jitted step on real arrays.
    real = partition.global_batch(local, mesh)
    jitted = partition.jit_sharded(
        loop.make_train_step(loss, 2),
        (state_sh, {k: v.sharding for k, v in real.items()}),
        (state_sh, partition.replicated(mesh)),
        donate_argnums=(0,),
    )
    with partition.sharding_context(mesh, rules):
        m = jitted.lower(state, real).compile().memory_analysis()
    assert step.source == "compiled" and step.temp > 0
    assert step.temp == pytest.approx(m.temp_size_in_bytes, rel=0.1)


def test_frozen_roles_decode_cache_and_one_at_a_time():
    config = get_config("tiny")
    mesh, rules = make_mesh(1, -1, 1), get_rules("fsdp")
    side = phase_memory.Side(mesh, rules)
    calls = (
        stage_memory.Call("score", 16, 64, name="score"),
        stage_memory.Call("decode", 8, 48, 16, 2, name="rationales"),
    )
    labeler = stage_memory.FrozenRole(
        "labeler", config.replace(param_dtype="bfloat16"), "lm", calls
    )
    role, phases = stage_memory.frozen_rows(labeler, side)
    params, _ = model_params.init_params(
        config.replace(param_dtype="bfloat16"), jax.random.PRNGKey(0), mesh, rules, "lm"
    )
    assert role.params == pytest.approx(device0_bytes(params), rel=0.1)
    assert role.params == pytest.approx(analysed_bytes(params), rel=0.1)
    # The toy labeler preset, sharded fsdp: bytes only (no phase compiled).
    toy = get_config("toy_labeler")
    toy_role, _ = phase_memory.frozen_role("labeler", toy, side)
    toy_params, _ = model_params.init_params(toy, jax.random.PRNGKey(0), mesh, rules, "lm")
    assert toy_role.params == pytest.approx(device0_bytes(toy_params), rel=0.1)
    assert toy_role.params == pytest.approx(analysed_bytes(toy_params), rel=0.1)
    score, decode = phases
    assert score.source == decode.source == "compiled" and score.temp > 0
    # 8 prompts x 2 samples over 8 devices, 48 + 16 slots, 2 layers of k and v (f32).
    kv = 2 * config.num_layers * (16 // 8) * 64 * config.num_kv_heads * config.head_dim * 4
    assert decode.kv_cache == kv and decode.temp >= kv

    # Evaluate: two policies and the judge, loaded one at a time: the peak is the
    # largest of them with its call, not their sum.
    layout = type("Layout", (), {"max_context": 48, "max_response": 16})()

    def describe(where):  # an artifact's (config, layout); rl_rlhf is not trained yet
        if where == "rl_rlhf":
            raise FileNotFoundError(where)
        return config, layout

    roles, notes = stage_memory.policy_decoders(
        [("sft", "sft"), ("rl", "rl"), ("rlhf", "rl_rlhf")], describe, 16, 2, 0.9
    )
    assert notes == ["not planned, no model artifact yet: rlhf (rl_rlhf)"]
    roles.append(stage_memory.FrozenRole("judge", config, "lm", calls[:1], exclusive=True))
    how = stage_memory.Planning.of(memory.MemoryPlanSettings(compile=False), side)
    plan_rows, plan_phases = [], []
    for spec in roles:
        r, ps = stage_memory.frozen_rows(spec, side, how.compile)
        plan_rows.append(r)
        plan_phases += ps
    plan = how.plan("evaluate", plan_rows, plan_phases)
    one = max(r.total + p.total for r, p in zip(plan_rows, plan_phases))
    assert plan.peak() == one
    assert "| policy sft (float32, one at a time) | 0-7 |" in plan.table()

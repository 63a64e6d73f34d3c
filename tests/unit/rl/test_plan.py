"""rl/plan.py: the RL memory plan's per-role bytes agree with memory_analysis() and with
the arrays the stage's own code allocates (issue 21.1), on the tiny and toy presets over
8 fake devices; the compiled phases are read from memory_analysis; a plan over a small
capacity refuses, naming the role."""

from __future__ import annotations

import jax
import pytest

import rlaif_jax.toy.presets  # noqa: F401  (registers toy_policy)
from rlaif_jax.models.config import get_config
from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.rl import plan as plan_lib
from rlaif_jax.rl import roles as roles_lib
from rlaif_jax.rl.runner import RLSettings, make_optimizer
from rlaif_jax.sharding import memory, model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

SETTINGS = RLSettings(batch_size=8, samples_per_prompt=2, microbatches=2)
LP, T = 24, 8


def _device0_bytes(tree, part: str | None = None) -> int:
    """Bytes the live arrays of `tree` (under key `part`) hold on the first device."""
    dev = jax.devices()[0]
    total = 0
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        if part is not None and f"'{part}'" not in jax.tree_util.keystr(path):
            continue
        total += sum(int(s.data.nbytes) for s in x.addressable_shards if s.device == dev)
    return total


def _analysed(tree) -> int:
    """memory_analysis() argument bytes per device of a program that reads `tree`."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree
    )
    m = memory.compiled_memory(lambda t: [x.sum() for x in jax.tree.leaves(t)], abstract)
    return m.argument


@pytest.mark.parametrize(
    "preset, mesh_shape, rules",
    [("tiny", (-1, 1, 1), "dp"), ("toy_policy", (2, 4, 1), "fsdp")],
)
def test_role_bytes_match_allocation_and_memory_analysis(preset, mesh_shape, rules):
    config = get_config(preset)
    mesh, rules = make_mesh(*mesh_shape), get_rules(rules)
    side = plan_lib.Side(mesh, rules)
    tx = make_optimizer(SETTINGS)
    rm = memory.ScoringRoleSpec("reward", config.replace(param_dtype="bfloat16"), "scalar", 8, 32)
    plan = plan_lib.plan_rl(
        config, SETTINGS, LP, T, side, tx, reward=rm, anchor_dtype="bfloat16", compile=False
    )
    planned = {r.role: r for r in plan.roles}

    sft, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, rules, "lm")
    roles = roles_lib.build_roles(config, sft, mesh, rules, "bfloat16")
    state, _ = learner_lib.create_state(roles.params, roles.param_shardings, tx, mesh, 0)
    reward, _ = model_params.init_params(
        config.replace(param_dtype="bfloat16"), jax.random.PRNGKey(1), mesh, rules, "scalar"
    )
    actual = {
        "policy": (
            _device0_bytes(state.params["policy"]),
            _device0_bytes(state.opt_state, "policy"),
        ),
        "value": (_device0_bytes(state.params["value"]), _device0_bytes(state.opt_state, "value")),
        "anchor": (_device0_bytes(roles.anchor), 0),
        "reward": (_device0_bytes(reward), 0),
    }
    analysed = {
        "policy": _analysed(state.params["policy"]),
        "value": _analysed(state.params["value"]),
        "anchor": _analysed(roles.anchor),
        "reward": _analysed(reward),
    }
    for role, (params, opt) in actual.items():
        p = planned[role]
        assert p.params == pytest.approx(params, rel=0.1), role
        assert p.params == pytest.approx(analysed[role], rel=0.1), role
        assert p.opt_state == pytest.approx(opt, rel=0.1), role
    assert planned["anchor"].params * 2 == pytest.approx(planned["policy"].params, rel=0.01)
    # Adam: two moments per trainable param (the planned opt state is not a guess).
    assert planned["policy"].opt_state == pytest.approx(2 * planned["policy"].params, rel=0.01)
    opt_all = planned["policy"].opt_state + planned["value"].opt_state
    assert opt_all == pytest.approx(_analysed(state.opt_state), rel=0.1)


def test_compiled_phases_and_refusal_naming_the_role():
    config = get_config("tiny")
    side = plan_lib.Side(make_mesh(1, -1, 1), get_rules("fsdp"))
    plan = plan_lib.plan_rl(config, SETTINGS, LP, T, side, make_optimizer(SETTINGS))
    phases = {p.phase: p for p in plan.phases}
    assert set(phases) == {"sample", "score", "update"}
    assert all(p.source == "compiled" and p.temp > 0 for p in phases.values())
    # The sampler's cache: N = 16 rows over 8 devices, Lp + T slots, 2 layers of k and v.
    kv = 2 * 2 * (16 // 8) * (LP + T) * config.num_kv_heads * config.head_dim * 4
    assert phases["sample"].kv_cache == kv
    assert phases["sample"].temp >= kv  # the cache is one of the sampler's temporaries
    assert plan.fits  # capacity unknown: never refused

    resident = sum(r.total for r in plan.roles)
    tight = plan_lib.plan_rl(
        config, SETTINGS, LP, T, side, make_optimizer(SETTINGS), capacity=resident, compile=False
    )
    with pytest.raises(memory.MemoryPlanError, match="roles policy, value, anchor") as e:
        tight.check()
    assert "RLSettings.microbatches" in str(e.value) or "fsdp" in str(e.value)
    assert "| policy | 0-7 |" in str(e.value)

"""rl/learner.py on placements (issue 21.2 / 21.4): the anchor and the value model on
devices of their own give the RL step of the colocated roles.

A TinyLM policy runs on devices 0-3; the anchor and / or the value model sit on devices
4-7 (their own mesh shape and rules table). One RL step (sampling, reward, score passes,
targets, update) must give the colocated step's params and metrics: the anchor's
log-probs and the value model's forward pass are computed on their devices and resharded
to the learner, the value's update runs there on returns / advantages moved by
jax.device_put. An offloaded anchor waits in host memory between its score passes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.rl import placement as rl_placement
from rlaif_jax.rl import roles as roles_lib
from rlaif_jax.rl import runner as runner_lib
from rlaif_jax.rl.plan import Side
from rlaif_jax.sharding import partition
from rlaif_jax.sharding import placement as placement_lib
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.placement import RolePlacement
from rlaif_jax.sharding.rules import get_rules
from rlaif_jax.train import checkpoint
from tests.integration import rl_fakes

SETTINGS = runner_lib.RLSettings(
    batch_size=8,
    samples_per_prompt=2,
    # SGD: the update is linear in the gradient (Adam's first steps, g / (|g| + eps), turn
    # float32 reduction-order differences of separately compiled passes into whole steps).
    learning_rate=0.5,
    optimizer="sgd",
    grad_clip=1.0,
    max_response=6,
    max_context=4,
    kl_coef=0.1,
    entropy_coef=0.01,
)
# The step's numbers: equal placed and colocated (timings aside).
KEYS = (
    "reward_mean",
    "kl",
    "kl_per_token",
    "return_mean",
    "loss",
    "policy_loss",
    "value_loss",
    "entropy",
    "explained_variance",
    "value_mean",
    "grad_norm",
    "grad_norm_policy",
    "grad_norm_value",
)


def reward_fn(contexts, responses):
    return np.array([r.count("c") - 0.1 * len(r) for r in responses], np.float32)


def _runner(value_apart: bool, anchor_apart: bool, offload: bool = False, reward=reward_fn):
    """A TinyLM runner with the learner on devices 0-3 and the value model / anchor on
    4-7 (mesh data=2 x fsdp=2, 'fsdp' rules) when apart, else on 0-3 too."""
    vocab = rl_fakes.CharVocab()
    devices = jax.devices()
    mesh, rules = make_mesh(data=-1, devices=devices[:4]), get_rules("dp")
    other = Side(make_mesh(data=2, fsdp=2, devices=devices[4:]), get_rules("fsdp"))
    policy = rl_fakes.TinyLM(vocab.size, head="lm")
    value = rl_fakes.TinyLM(vocab.size, head="scalar")
    tok = jnp.zeros((2, 4), jnp.int32)
    sft = policy.init(jax.random.PRNGKey(0), tok)["params"]
    # Born where their role lives: the learner's copy of the SFT params on 0-3, the value
    # head and the anchor on 4-7 when apart (as `rl.placement.place_roles` moves them).
    where = {"value": other if value_apart else None, "anchor": other if anchor_apart else None}
    on = lambda side, t: jax.device_put(t, partition.replicated((side or learner).mesh))  # noqa: E731
    learner = Side(mesh, rules)
    params = {
        "policy": on(None, sft),
        "value": on(where["value"], value.init(jax.random.PRNGKey(1), tok)["params"]),
    }
    anchor = on(where["anchor"], sft)
    sharding_of = lambda t: jax.tree.map(lambda x: x.sharding, t)  # noqa: E731
    roles = roles_lib.PolicyRoles(
        None, policy, value, params, sharding_of(params), anchor, sharding_of(anchor),
        value_side=where["value"], anchor_side=where["anchor"],
        offload_anchor=offload and anchor_apart, offload_value=offload and value_apart,
    )  # fmt: skip
    sample_fn = rl_fakes.make_sample_fn(
        policy, SETTINGS.max_response, SETTINGS.temperature, vocab.eos_id, vocab.pad_id, 2
    )
    return runner_lib.RLRunner(SETTINGS, roles, reward, vocab, mesh, rules, sample_fn)


def _two_steps(runner):
    records = rl_fakes.prompts(8)
    metrics = [runner.step(records), runner.step(records)]
    return jax.device_get(runner.state.params), metrics


def _assert_same_step(a, b):
    (pa, ma), (pb, mb) = a, b
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    for step_a, step_b in zip(ma, mb):
        for key in KEYS:
            np.testing.assert_allclose(step_a[key], step_b[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def colocated():
    return _two_steps(_runner(False, False))


def test_anchor_on_its_own_devices_gives_the_colocated_step(colocated):
    runner = _runner(False, True, offload=True)
    anchor = runner.roles.anchor
    assert placement_lib.mesh_device_ids(jax.tree.leaves(anchor)[0].sharding.mesh) == (4, 5, 6, 7)
    out = _two_steps(runner)
    _assert_same_step(out, colocated)
    # Two Adam steps moved the policy off the anchor: the KL of step 2 is not zero.
    assert colocated[1][1]["kl_per_token"] != 0.0
    # Offloaded: the anchor waits in host memory between its passes (CPU has the kind).
    kinds = {x.sharding.memory_kind for x in jax.tree.leaves(runner.roles.anchor)}
    assert kinds == {placement_lib.HOST_MEMORY_KIND}


def test_value_on_its_own_devices_gives_the_colocated_step(colocated, tmp_path):
    kinds = []

    def reward(contexts, responses):  # called between sampling and the score passes
        kinds.append({x.sharding.memory_kind for x in jax.tree.leaves(runner.state.params)})
        return reward_fn(contexts, responses)

    runner = _runner(True, False, offload=True, reward=reward)
    out = _two_steps(runner)
    _assert_same_step(out, colocated)
    # Offloaded: the value model waited in host memory while the policy sampled.
    assert kinds == [{"device", placement_lib.HOST_MEMORY_KIND}] * 2
    assert {x.sharding.memory_kind for x in jax.tree.leaves(runner.state)} == {"device"}
    # One RLState, one checkpoint: it restores onto both device sets (an exact resume).
    ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(2, runner.state, {"step": 2}, wait=True)
    restored, _ = ckpt.restore(runner.state)
    ckpt.close()
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(runner.state), strict=True):
        assert a.sharding.device_set == b.sharding.device_set
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    value_leaf = jax.tree.leaves(runner.state.params["value"])[0]
    assert placement_lib.mesh_device_ids(value_leaf.sharding.mesh) == (4, 5, 6, 7)
    # Adam's moments of the value are born on its devices (SGD above keeps no state).
    tx = runner_lib.make_optimizer(dataclasses.replace(SETTINGS, optimizer="adam"))
    mesh = make_mesh(data=-1, devices=jax.devices()[:4])
    w = jax.device_put(jnp.ones(4), partition.replicated(mesh))
    params = {"policy": {"w": w}, "value": {"w": value_leaf}}
    shardings = jax.tree.map(lambda x: x.sharding, params)
    other = value_leaf.sharding.mesh
    state, _ = learner_lib.create_state(params, shardings, tx, mesh, 0, value_mesh=other)
    moment = jax.tree.leaves(state.opt_state["value"])[-1]
    assert {d.id for d in moment.sharding.device_set} == {4, 5, 6, 7}
    policy_leaf = jax.tree.leaves(runner.state.params["policy"])[0]
    assert {d.id for d in policy_leaf.sharding.device_set} == {0, 1, 2, 3}


def test_value_and_anchor_apart_at_the_first_step_have_zero_kl(colocated):
    """Both on 4-7: the policy equals its anchor at step 0 and both log-probs are
    teacher-forced (issue 20 (b)), wherever they were computed."""
    runner = _runner(True, True)
    records = rl_fakes.prompts(8)
    batch, _ = runner.rollout(records, jax.random.PRNGKey(3))
    kl = batch["logprobs"] - batch["anchor_logprobs"]
    assert float(jnp.abs(kl).max()) <= 1e-6
    assert {d.id for d in batch["values"].sharding.device_set} == {0, 1, 2, 3}
    _assert_same_step(_two_steps(runner), colocated)


def test_parts_optimizer_steps_each_part_alone_as_in_the_joint_state():
    """The per-part optimizer's state is a dict by part: a part initialised and updated
    alone gives the joint update's numbers for that part."""
    tx = runner_lib.make_optimizer(dataclasses.replace(SETTINGS, optimizer="adam"))
    params = {"policy": {"w": jnp.ones(3)}, "value": {"w": jnp.full(3, 2.0)}}
    grads = {"policy": {"w": jnp.array([1.0, -2.0, 3.0])}, "value": {"w": jnp.full(3, 5.0)}}
    joint, _ = tx.update(grads, tx.init(params), params)
    alone, _ = tx.update(
        {"value": grads["value"]}, tx.init({"value": params["value"]}), {"value": params["value"]}
    )
    np.testing.assert_array_equal(alone["value"]["w"], joint["value"]["w"])
    with pytest.raises(ValueError, match="critic"):
        tx.init({"critic": params["value"]})


def test_layouts_that_cannot_split_are_refused():
    mesh, rules = make_mesh(), get_rules("dp")
    rp = rl_placement.resolve(
        {"policy": RolePlacement(devices=(0, 4)), "anchor": RolePlacement(devices=(4, 8))},
        mesh,
        rules,
        "float32",
    )
    assert rp.apart("anchor") and not rp.apart("value") and rp.anchor_dtype == "bfloat16"
    with pytest.raises(ValueError, match="frozen base of the policy and value adapters"):
        rl_placement.check_layout(rp, object(), False)
    rp = rl_placement.resolve(
        {"policy": RolePlacement(devices=(0, 4)), "value": RolePlacement(devices=(4, 8))},
        mesh,
        rules,
        "float32",
    )
    with pytest.raises(ValueError, match="value_on_policy_trunk"):
        rl_placement.check_layout(rp, None, True)

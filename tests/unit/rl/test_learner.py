"""rl/learner.py: the A2C update on the shared loop — per-part clipping keeps the value
loss's scale out of the policy update, micro-batching gives the one-batch update (and the
losses of a NumPy reference), and the KL term compares like with like."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import pytest

from rlaif_jax.rl import a2c, learner
from rlaif_jax.rl.runner import RLSettings
from rlaif_jax.train import loop
from rlaif_jax.train import state as train_state
from tests.integration import rl_fakes

SETTINGS = RLSettings(
    batch_size=8,
    samples_per_prompt=2,
    learning_rate=0.5,
    optimizer="sgd",
    grad_clip=1e-3,  # tight: clipping is active for both parts
    max_response=6,
    max_context=4,
    kl_coef=0.1,
)


def reward_fn(contexts, responses):
    return np.array([r.count("c") - 0.1 * len(r) for r in responses], np.float32)


def _one_step(settings, records, with_batch=False):
    runner = rl_fakes.make_runner(settings, reward_fn)
    runner.params_before = jax.device_get(runner.state.params)  # the update donates them
    batch, _ = runner.rollout(records, jax.random.PRNGKey(3))
    state, targets, _ = runner.learner.targets_fn(runner.state, batch)
    batch.update(targets)
    update_batch = {k: batch[k] for k in learner.UPDATE_FIELDS}
    state, metrics = runner.learner.update_fn(state, update_batch)
    out = jax.device_get(state.params), {k: float(v) for k, v in metrics.items()}
    if with_batch:
        return out + (jax.device_get(batch), runner)
    return out


def _close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def test_value_loss_scale_leaves_policy_update_unchanged():
    records = rl_fakes.prompts(8)
    small, m_small = _one_step(dataclasses.replace(SETTINGS, value_coef=1.0), records)
    big, m_big = _one_step(dataclasses.replace(SETTINGS, value_coef=100.0), records)
    assert m_small["grad_norm_policy"] > SETTINGS.grad_clip  # clipping active
    for x, y in zip(jax.tree.leaves(small["policy"]), jax.tree.leaves(big["policy"])):
        np.testing.assert_array_equal(x, y)
    diffs = [
        np.abs(np.asarray(x) - np.asarray(y)).max()
        for x, y in zip(jax.tree.leaves(small["value"]), jax.tree.leaves(big["value"]))
    ]
    assert max(diffs) > 0  # the value update itself did see the scale


def test_joint_clipping_would_couple_the_parts():
    """The control: one clip over {policy, value} (the old optimizer) lets the value
    loss's scale change the policy update, which per-part clipping prevents."""
    records = rl_fakes.prompts(8)
    _, _, batch, runner = _one_step(SETTINGS, records, with_batch=True)
    params = runner.params_before
    joint = optax.chain(optax.clip_by_global_norm(SETTINGS.grad_clip), optax.sgd(0.5))
    update_batch = {k: batch[k] for k in learner.UPDATE_FIELDS}

    def policy_after(value_coef):
        hyper = dataclasses.replace(SETTINGS, value_coef=value_coef).hyper
        loss_fn = learner.make_loss_fn(
            runner.roles.policy_model, runner.roles.value_model, hyper, pad_id=0
        )
        state = train_state.TrainState.create(params, joint)
        state, _ = jax.jit(loop.make_train_step(loss_fn))(state, update_batch)
        return state.params["policy"]

    a, b = policy_after(1.0), policy_after(100.0)
    assert max(np.abs(x - y).max() for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))) > 0


def test_microbatches_give_the_one_batch_update_and_the_numpy_losses():
    records = rl_fakes.prompts(8)
    settings = dataclasses.replace(SETTINGS, grad_clip=None, learning_rate=0.05)
    whole, m_whole, batch, _ = _one_step(settings, records, with_batch=True)
    split, m_split = _one_step(dataclasses.replace(settings, microbatches=2), records)
    split4, _ = _one_step(dataclasses.replace(settings, microbatches=4), records)
    _close(whole, split, rtol=2e-5, atol=1e-6)
    _close(whole, split4, rtol=2e-5, atol=1e-6)
    mask = np.asarray(batch["response_mask"], np.float64)
    lengths = mask.sum(-1)
    # Token counts differ between the slices, so a per-slice token mean would not agree.
    assert lengths[0::2].sum() != lengths[1::2].sum()

    # NumPy reference of the A2C losses on the rollout (pre-update params: the update's
    # forward pass equals the rollout-time teacher-forced one).
    lp, v = np.asarray(batch["logprobs"], np.float64), np.asarray(batch["values"], np.float64)
    ret, adv = np.asarray(batch["returns"], np.float64), np.asarray(batch["advantages"])
    pg = -(lp * adv * mask).sum() / mask.sum()
    vl = (((ret - v) ** 2) * mask).sum() / mask.sum()
    for metrics in (m_whole, m_split):
        np.testing.assert_allclose(metrics["policy_loss"], pg, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(metrics["value_loss"], vl, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            metrics["loss"], pg + settings.value_coef * vl, rtol=1e-4, atol=1e-6
        )


def test_kl_of_a_policy_equal_to_its_anchor_is_zero():
    """At step 0 the policy is the anchor; both log-probs come from the same teacher-forced
    computation, so the KL-control reward is zero up to float32 rounding (the sampler's
    own log-probs, from another computation, are not used for it)."""
    records = rl_fakes.prompts(8)
    _, _, batch, _ = _one_step(SETTINGS, records, with_batch=True)
    kl = a2c.per_token_kl(batch["logprobs"], batch["anchor_logprobs"], batch["response_mask"])
    assert float(np.abs(kl).max()) <= 1e-6


def test_microbatches_must_divide_the_rollouts():
    with pytest.raises(ValueError, match="RLSettings.microbatches = 3"):
        dataclasses.replace(SETTINGS, microbatches=3)  # 8 prompts x 2 samples = 16 rows

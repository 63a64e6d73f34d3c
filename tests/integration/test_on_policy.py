"""No stale weights: the rollout's per-token log-probs equal teacher-forced log-probs of
the same tokens under the params being trained (after updates, not just at init)."""

from __future__ import annotations

import importlib.util

import jax
import numpy as np
import pytest

from rlaif_jax.data import batching
from rlaif_jax.rl import rollout
from rlaif_jax.rl.runner import RLSettings
from rlaif_jax.sharding import partition
from tests.integration import rl_fakes

SETTINGS = RLSettings(
    batch_size=8, samples_per_prompt=2, learning_rate=1e-2, max_response=6, max_context=4
)


def _reward(contexts, responses):
    return np.array([r.count("c") / max(len(r), 1) for r in responses], np.float32)


def test_rollout_logprobs_match_teacher_forced_packing_after_updates():
    runner = rl_fakes.make_runner(SETTINGS, _reward)
    records = rl_fakes.prompts(8)
    for i in range(3):  # move the params away from the anchor first
        runner.step(records, jax.random.PRNGKey(i))
    tokens, lengths = batching.prompt_batch(records, runner.vocab, SETTINGS.max_context)
    prompts = partition.global_batch({"t": tokens, "l": lengths}, runner.mesh)
    out = runner.sample_fn(runner.policy_params, prompts["t"], prompts["l"], jax.random.PRNGKey(9))
    idx = np.asarray(out.prompt_index)
    packed = rollout.pack_sequences(
        tokens[idx], lengths[idx], out.tokens, out.mask, runner.vocab.pad_id
    )
    tf, _ = rollout.policy_outputs(
        runner.roles.policy_model, runner.policy_params, packed, out.tokens
    )
    mask = np.asarray(out.mask, bool)
    np.testing.assert_allclose(
        np.asarray(tf)[mask], np.asarray(out.logprobs)[mask], rtol=1e-5, atol=1e-5
    )
    anchor_tf, _ = rollout.policy_outputs(
        runner.roles.policy_model, runner.roles.anchor, packed, out.tokens
    )
    assert np.abs(np.asarray(anchor_tf)[mask] - np.asarray(out.logprobs)[mask]).max() > 1e-3


@pytest.mark.skipif(
    importlib.util.find_spec("rlaif_jax.decoding.sample") is None
    or importlib.util.find_spec("rlaif_jax.models.model") is None,
    reason="rlaif_jax.decoding / rlaif_jax.models not in this checkout yet",
)
def test_sampler_logprobs_equal_scorer_token_logprobs():
    """The real sampler vs decoding.score.token_logprobs under the same tiny model params."""
    from rlaif_jax.decoding import sample, score
    from rlaif_jax.models import config as model_config
    from rlaif_jax.sharding import model_params
    from rlaif_jax.sharding.mesh import make_mesh
    from rlaif_jax.sharding.rules import get_rules

    config = model_config.get_config("tiny")
    mesh, rules = make_mesh(data=-1), get_rules("dp")
    init = model_params.init_params(config, jax.random.PRNGKey(0), mesh, rules, head="lm")
    params = init[0] if isinstance(init, tuple) else init
    rng = np.random.default_rng(0)
    lengths = np.array([3, 5, 2, 4, 5, 1, 3, 2], np.int32)
    prompt = np.zeros((8, 6), np.int32)
    for b, n in enumerate(lengths):
        prompt[b, :n] = rng.integers(3, 20, n)
    with partition.sharding_context(mesh, rules):
        out = sample.sample(
            config,
            params,
            prompt,
            lengths,
            jax.random.PRNGKey(1),
            max_new_tokens=5,
            temperature=0.9,
            top_k=0,
            top_p=1.0,
            eos_id=1,
            pad_id=0,
            num_samples=2,
        )
        idx = np.asarray(out.prompt_index)
        packed = rollout.pack_sequences(prompt[idx], lengths[idx], out.tokens, out.mask, 0)
        tf = score.token_logprobs(config, params, packed.tokens, packed.attention_mask)
    tf = np.take_along_axis(np.asarray(tf), np.asarray(packed.state_positions) + 1, axis=1)
    mask = np.asarray(out.mask, bool)
    np.testing.assert_allclose(tf[mask], np.asarray(out.logprobs)[mask], rtol=1e-4, atol=1e-4)

"""A bandit-like task (the reward prefers the letter 'f'): the A2C loop raises the reward
and the KL to the anchor grows from 0, with an RM-style reward and a d-RLAIF labeler."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.labeling import direct
from rlaif_jax.rl import rewards
from rlaif_jax.rl.runner import RLSettings
from tests.integration import rl_fakes


class ShiftedVocab:
    """The reward model's own vocabulary: other ids than the policy's (chars + 40)."""

    pad_id, eos_id, bos_id = 0, 1, None

    def encode(self, s):
        return [ord(c) + 40 for c in s]

    def decode(self, ids):
        return "".join(chr(i - 40) for i in ids if i >= 40)


def rm_reward(mesh):
    """RM-style scalar reward through RewardModelReward: fraction of 'f' in the response,
    computed on ids of the RM's vocabulary (so re-tokenization must have happened)."""
    vocab = ShiftedVocab()
    f_id, sep_id = vocab.encode("f")[0], vocab.encode(">")[0]

    @jax.jit
    def score_fn(params, tokens, lengths):
        pos = jnp.arange(tokens.shape[1])[None]
        after = (jnp.cumsum(tokens == sep_id, axis=1) > 0) & (tokens != sep_id)
        valid = after & (pos < lengths[:, None]) & (tokens != vocab.eos_id)
        n = jnp.maximum(jnp.sum(valid, 1), 1)
        return params["w"] * jnp.sum((tokens == f_id) & valid, 1) / n

    return rewards.RewardModelReward(
        score_fn=score_fn,
        params={"w": jnp.float32(1.0)},
        vocab=vocab,
        mesh=mesh,
        max_context=8,
        max_response=8,
        prompt_suffix=">",
        batch_size=16,
    )


class RiggedLabeler:
    """A d-RLAIF labeler stub (`PromptScorer`): score mass peaks at 1 + 9·(fraction of 'f')."""

    def __init__(self, vocab):
        self.vocab = vocab

    def score(self, prefix, suffixes, candidate_ids):
        out = []
        for s in suffixes:
            text = self.vocab.decode(list(prefix) + list(s))
            resp = re.search(r"SUMMARY: (.*)\n", text).group(1)
            peak = 1 + 9 * resp.count("f") / max(len(resp), 1)
            out.append([-abs(i + 1 - peak) for i in range(10)])
        return np.array(out)


class TenCharVocab(ShiftedVocab):
    """Labeler vocabulary with '10' as one piece."""

    def encode(self, s):
        out, i = [], 0
        while i < len(s):
            if s.startswith("10", i):
                out.append(7)
                i += 2
            else:
                out.append(ord(s[i]) + 40)
                i += 1
        return out

    def decode(self, ids):
        return "".join("10" if i == 7 else chr(i - 40) for i in ids if i >= 7)


def drlaif_reward(mesh):
    del mesh
    vocab = TenCharVocab()
    return rewards.DirectLabelerReward(direct.DirectScorer(RiggedLabeler(vocab), vocab))


SETTINGS = RLSettings(
    batch_size=16,
    samples_per_prompt=2,
    learning_rate=3e-3,
    max_response=6,
    max_context=4,
    kl_coef=0.05,
    num_epochs=1,
    temperature=0.9,
)


@pytest.mark.parametrize("make_reward", [rm_reward, drlaif_reward], ids=["rm", "d_rlaif"])
def test_reward_rises_and_kl_grows(make_reward):
    runner = rl_fakes.make_runner(SETTINGS, reward_fn=None)
    runner.reward_fn = make_reward(runner.mesh)
    records = rl_fakes.prompts(16)
    hist = [runner.step(records, jax.random.PRNGKey(i)) for i in range(30)]
    reward = np.array([m["reward_mean"] for m in hist])
    kl = np.array([m["kl"] for m in hist])
    assert abs(kl[0]) < 1e-4  # the first rollout comes from the anchor's own params
    assert reward[-5:].mean() > reward[:5].mean() + 0.15, reward
    assert kl[-5:].mean() > 0.1, kl
    assert np.all(np.isfinite([m["loss"] for m in hist]))
    for key in (
        "reward_std",
        "entropy",
        "response_length",
        "value_loss",
        "explained_variance",
        "eos_fraction",
        "rollout_tokens_per_s",
        "update_tokens_per_s",
    ):
        assert np.isfinite(hist[-1][key]), key

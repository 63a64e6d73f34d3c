"""rl/rewards.py: reward functions, text in, float32 [B] out; the RM re-tokenizes with its
own vocab; the d-RLAIF labeler's rescaled expected score."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.labeling import direct
from rlaif_jax.rl import rewards
from rlaif_jax.sharding.mesh import make_mesh


class OffsetCharVocab:
    """One token per character, ids shifted by `offset` (two offsets = two vocabularies)."""

    pad_id, eos_id, bos_id = 0, 1, None

    def __init__(self, offset: int = 3):
        self.offset = offset

    def encode(self, s):
        return [ord(c) + self.offset for c in s]

    def decode(self, ids):
        return "".join(chr(i - self.offset) for i in ids if i >= self.offset)


def _fraction_of_char(char: str, vocab: OffsetCharVocab, sep: str):
    """A fake RM score_fn: fraction of `char` among response tokens (after `sep`), in the
    RM vocabulary's ids — so it only works if the text was re-tokenized with `vocab`."""
    target = vocab.encode(char)[0]
    sep_id = vocab.encode(sep)[0]

    @jax.jit
    def fn(params, tokens, lengths):
        pos = jnp.arange(tokens.shape[1])[None]
        after = jnp.cumsum(tokens == sep_id, axis=1) > 0
        valid = (pos < lengths[:, None]) & after & (tokens != sep_id) & (tokens != vocab.eos_id)
        hits = jnp.sum((tokens == target) & valid, axis=1)
        return params["scale"] * hits / jnp.maximum(jnp.sum(valid, axis=1), 1)

    return fn


def test_reward_model_reward_retokenizes_batches_and_keeps_fractions():
    mesh = make_mesh(data=-1)
    vocab = OffsetCharVocab(offset=7)  # not the policy's ids
    fn = rewards.RewardModelReward(
        score_fn=_fraction_of_char("x", vocab, "|"),
        params={"scale": jnp.float32(1.0)},
        vocab=vocab,
        mesh=mesh,
        max_context=16,
        max_response=12,
        prompt_suffix="|",
        batch_size=8,
    )
    contexts = [f"post {i}" for i in range(11)]  # 11 rows: one full chunk + a padded one
    responses = ["xxx", "abc", "xa", "x", "", "xyzxyz", "aaax", "xxxx", "b", "xb", "bbbx"]
    out = fn(contexts, responses)
    assert out.dtype == np.float32 and out.shape == (11,)
    want = [r.count("x") / max(len(r), 1) for r in responses]
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert 0 < out[2] < 1  # a fraction, not truncated to an integer


def test_reward_model_reward_counts_truncation_and_checks_batch():
    mesh = make_mesh(data=-1)
    vocab = OffsetCharVocab()
    fn = rewards.RewardModelReward(
        score_fn=_fraction_of_char("x", vocab, "|"),
        params={"scale": jnp.float32(2.0)},
        vocab=vocab,
        mesh=mesh,
        max_context=8,
        max_response=4,
        prompt_suffix="|",
        batch_size=8,
    )
    out = fn(["a very long context indeed"], ["xxxxxxxx"])
    np.testing.assert_allclose(out, [2.0])  # response cut to 3 tokens + EOS, all 'x'
    assert fn.stats.truncated_context == 1 and fn.stats.truncated_response == 1
    with pytest.raises(ValueError, match="pair up"):
        fn(["a"], [])
    with pytest.raises(ValueError, match="reward_model_from_checkpoint.batch_size"):
        rewards.RewardModelReward(
            score_fn=None,
            params=None,
            vocab=vocab,
            mesh=mesh,
            max_context=4,
            max_response=4,
            batch_size=6,
        )


class RiggedDirectModel:
    """A stub labeler (`PromptScorer`): for the d-RLAIF prompt it puts its score mass on
    1 + (number of 'good' in the SUMMARY), capped at 10, with a fractional spread."""

    def __init__(self, vocab):
        self.vocab = vocab

    def score(self, prefix, suffixes, candidate_ids):
        out = []
        for s in suffixes:
            text = self.vocab.decode(list(prefix) + list(s))
            m = re.search(r"SUMMARY: (.*)\n", text)
            peak = min(10, 1 + m.group(1).count("good"))
            logits = np.array([-abs(i + 1 - peak) * 1.5 for i in range(10)])
            out.append(logits - 2.0)  # unnormalised: DirectScorer renormalises over the 10
        return np.array(out)

    def generate(self, *a, **k):
        raise NotImplementedError


class TenVocab(OffsetCharVocab):
    """Char vocab where "10" is one piece (as the project's SentencePiece vocabs are)."""

    TEN = 100_000

    def encode(self, s):
        out, i = [], 0
        while i < len(s):
            if s.startswith("10", i):
                out.append(self.TEN)
                i += 2
            else:
                out.append(ord(s[i]) + self.offset)
                i += 1
        return out

    def decode(self, ids):
        return "".join("10" if i == self.TEN else chr(i - self.offset) for i in ids if i >= 3)


def test_direct_labeler_reward_rescales_expected_score():
    vocab = TenVocab()
    scorer = direct.DirectScorer(RiggedDirectModel(vocab), vocab)
    fn = rewards.DirectLabelerReward(scorer)
    contexts = ["a post", "a post", "another"]
    responses = ["bad", "good good good", "good " * 12]
    out = fn(contexts, responses)
    assert out.dtype == np.float32 and out.shape == (3,)
    exp = scorer.expected_scores(contexts, responses)
    np.testing.assert_allclose(out, (exp - 5.5) / 4.5, rtol=1e-6)
    assert -1 <= out.min() and out.max() <= 1
    assert out[0] < out[1] < out[2]
    assert np.any(np.abs(out * 4.5 - np.round(out * 4.5)) > 1e-3)  # fractional scores kept
    assert isinstance(fn, rewards.RewardFn)

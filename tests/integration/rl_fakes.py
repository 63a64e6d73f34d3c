"""Test-only stand-ins for the RL integration tests: a one-block causal LM with the
`models.transformer.Transformer` call signature, a plain sampler with the
`decoding.sample.SampleOutput` fields, a one-char-per-token vocabulary, and a builder
of `PolicyRoles`. They keep the A2C loop's tests small and independent of model code."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlaif_jax.rl import roles as roles_lib
from rlaif_jax.rl import runner as runner_lib
from rlaif_jax.sharding import partition
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

ALPHABET = "abcdefghij"


class CharVocab:
    """pad 0, eos 1, letters a..j -> 3..12 (V = 13)."""

    pad_id, eos_id, bos_id = 0, 1, None
    size = 3 + len(ALPHABET)

    def encode(self, s):
        return [ALPHABET.index(c) + 3 for c in s if c in ALPHABET]

    def decode(self, ids):
        return "".join(ALPHABET[i - 3] for i in ids if 3 <= i < self.size)


class TinyLM(nn.Module):
    """Embedding + causal running mean + MLP; head 'lm' -> [.., V], 'scalar' -> [..]."""

    vocab: int
    d: int = 32
    head: str = "lm"

    @nn.compact
    def __call__(
        self,
        tokens,
        positions=None,
        attention_mask=None,
        cache=None,
        cache_index=None,
        logits_positions=None,
    ):
        x = nn.Embed(self.vocab, self.d)(tokens)
        m = jnp.ones_like(tokens) if attention_mask is None else attention_mask
        m = m[..., None].astype(x.dtype)
        pooled = jnp.cumsum(x * m, 1) / jnp.maximum(jnp.cumsum(m, 1), 1.0)
        h = nn.tanh(nn.Dense(self.d)(jnp.concatenate([x, pooled], -1)))
        if logits_positions is not None:
            h = jnp.take_along_axis(h, logits_positions[..., None], 1)
        if self.head == "lm":
            return nn.Dense(self.vocab)(h), None
        return nn.Dense(1)(h)[..., 0], None


class SampleOutput(NamedTuple):
    tokens: jax.Array
    logprobs: jax.Array
    sampling_logprobs: jax.Array
    mask: jax.Array
    lengths: jax.Array
    prompt_index: jax.Array


def make_sample_fn(model, max_new_tokens, temperature, eos_id, pad_id, num_samples):
    """Full-forward sampler (no cache): rows prompt-major, logprobs at T = 1."""

    @jax.jit
    def fn(params, ptok, plen, rng):
        b0 = ptok.shape[0]
        ptok, plen = jnp.repeat(ptok, num_samples, 0), jnp.repeat(plen, num_samples, 0)
        b, lp = ptok.shape
        t_max = max_new_tokens
        seq = jnp.concatenate([ptok, jnp.full((b, t_max), pad_id, ptok.dtype)], 1)
        done = jnp.zeros(b, bool)
        toks, lps, masks = [], [], []
        for t in range(t_max):
            am = (jnp.arange(lp + t_max)[None] < (plen + t)[:, None]).astype(jnp.int32)
            logits, _ = model.apply(
                {"params": params}, seq, attention_mask=am, logits_positions=(plen + t - 1)[:, None]
            )
            logits = logits[:, 0]
            rng, key = jax.random.split(rng)
            a = jax.random.categorical(key, logits / temperature)
            logp = jax.nn.log_softmax(logits)[jnp.arange(b), a]
            valid = ~done
            a = jnp.where(valid, a, pad_id)
            seq = seq.at[jnp.arange(b), plen + t].set(a)
            toks.append(a)
            lps.append(jnp.where(valid, logp, 0.0))
            masks.append(valid)
            done = done | (a == eos_id)
        mask = jnp.stack(masks, 1)
        lp_all = jnp.stack(lps, 1)
        return SampleOutput(
            jnp.stack(toks, 1),
            lp_all,
            lp_all,
            mask.astype(jnp.int32),
            mask.sum(1),
            jnp.repeat(jnp.arange(b0), num_samples),
        )

    return fn


def make_runner(settings: runner_lib.RLSettings, reward_fn, seed: int = 0):
    """An RLRunner over TinyLM with policy/value/anchor as in `roles.build_roles`."""
    vocab = CharVocab()
    mesh = make_mesh(data=-1, devices=jax.devices())
    rules = get_rules("dp")
    policy, value = TinyLM(vocab.size, head="lm"), TinyLM(vocab.size, head="scalar")
    rep = partition.replicated(mesh)
    tok = jnp.zeros((2, 4), jnp.int32)
    sft = jax.device_put(policy.init(jax.random.PRNGKey(seed), tok)["params"], rep)
    head = jax.device_put(value.init(jax.random.PRNGKey(seed + 1), tok)["params"], rep)
    shardings = lambda t: jax.tree.map(lambda x: x.sharding, t)  # noqa: E731
    roles = roles_lib.PolicyRoles(
        config=None,
        policy_model=policy,
        value_model=value,
        params={"policy": jax.tree.map(jnp.copy, sft), "value": head},
        param_shardings={"policy": shardings(sft), "value": shardings(head)},
        anchor=sft,
        anchor_shardings=shardings(sft),
    )
    sample_fn = make_sample_fn(
        policy,
        settings.max_response,
        settings.temperature,
        vocab.eos_id,
        vocab.pad_id,
        settings.samples_per_prompt,
    )
    return runner_lib.RLRunner(settings, roles, reward_fn, vocab, mesh, rules, sample_fn)


def prompts(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"id": str(i), "context": "".join(rng.choice(list(ALPHABET), size=1 + i % 3))}
        for i in range(n)
    ]

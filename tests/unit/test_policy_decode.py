"""policy_decode.py: trailing-symbol stripping (paper App. E) is optional, on by default
for summarization only, and decode_policy applies it only when asked."""

from __future__ import annotations

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np

from rlaif_jax import policy_decode
from rlaif_jax.data.layout import InputLayout
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding.rules import get_rules


def test_postprocess_and_task_default():
    assert policy_decode.postprocess("a good summary. . .  ") == "a good summary."
    assert policy_decode.postprocess("no change") == "no change"
    assert policy_decode.strips_trailing_by_default("summarize")
    assert not policy_decode.strips_trailing_by_default("helpful")
    assert not policy_decode.strips_trailing_by_default("harmless")


class _Vocab:
    pad_id, eos_id, bos_id = 0, 1, None
    vocab_size = 8

    def encode(self, text):
        return [3] * max(1, len(text) // 4)

    def decode(self, ids):
        return "the summary. . . "


def test_decode_policy_strips_only_when_asked(monkeypatch):
    def fake_sampler(config, mesh, rules, **kw):
        def run(params, tokens, lengths, rng, prompt_ids=None):
            b = tokens.shape[0] * kw["num_samples"]
            return SimpleNamespace(
                tokens=jnp.full((b, 3), 3, jnp.int32), lengths=jnp.full((b,), 3, jnp.int32)
            )

        return run

    monkeypatch.setattr(policy_decode.sample_lib, "make_sampler", fake_sampler)
    mesh, rules = mesh_lib.make_mesh(8, 1, 1), get_rules("dp")
    layout = InputLayout(prompt_suffix="", max_context=8, max_response=3)
    prompts = [{"id": str(i), "context": "post text here"} for i in range(8)]
    kw = dict(temperature=0.0, batch_size=8)
    raw = policy_decode.decode_policy(None, None, _Vocab(), layout, prompts, mesh, rules, **kw)
    stripped = policy_decode.decode_policy(
        None, None, _Vocab(), layout, prompts, mesh, rules, strip_trailing=True, **kw
    )
    assert raw == ["the summary. . . "] * 8
    assert stripped == ["the summary."] * 8
    assert np.all([len(a) > len(b) for a, b in zip(raw, stripped)])

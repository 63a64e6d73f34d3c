"""rlaif_jax's KV-cache sampler vs Tunix's native sampler, same model shape, batch, device.

    python bench/peers/sampler_vs_tunix.py --shape small --json out.json

Both sample B prompts of P random tokens (all real, no padding) for T new tokens at
temperature 0.9 (no top-k/top-p truncation: Tunix's top_p=1.0 path is a plain
categorical draw), every step run (no stop id can be drawn), fp32, random weights of the
same Llama shape, returning tokens and their log-probs (rlaif_jax always returns them;
Tunix with return_logprobs=True). Tunix is timed twice: its public `Sampler.__call__`
(prompts as strings through a trivial id tokenizer, outputs detokenized) and its core
(init_sample_state + compiled prefill + compiled decode on the same token array, no
string work); the headline ratio ("tunix") uses the faster of the two.
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

THREADS = common.pin_threads_from_argv()  # before jax / torch are imported
HOST_MALLOC = common.configure_host_malloc()  # before jax / torch allocate

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import SHAPES, Shape, alternate, environment, summary  # noqa: E402

from rlaif_jax.decoding import sample as sample_lib  # noqa: E402
from rlaif_jax.models.config import ModelConfig  # noqa: E402
from rlaif_jax.sharding import model_params  # noqa: E402
from rlaif_jax.sharding.mesh import make_mesh  # noqa: E402
from rlaif_jax.sharding.rules import get_rules  # noqa: E402

# (batch, prompt, new tokens) per shape, as in issue #22.
BATCH = {"small": (16, 64, 32), "large": (16, 256, 64)}
TEMPERATURE = 0.9


class IdTokenizer:
    """Text is space-separated token ids (what Tunix's adapter needs: encode, decode,
    bos_id, eos_id, pad_id)."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def encode(self, text: str, **_) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids, **_) -> str:
        return " ".join(str(int(i)) for i in ids)

    def bos_id(self) -> int:
        return 2

    def eos_id(self) -> int:
        return self.vocab  # never sampled: every step runs

    def pad_id(self) -> int:
        return 0


def ours_config(s: Shape) -> ModelConfig:
    return ModelConfig(
        vocab_size=s.vocab,
        d_model=s.d_model,
        num_layers=s.layers,
        num_heads=s.heads,
        num_kv_heads=s.heads,
        head_dim=s.head_dim,
        mlp_dim=s.mlp,
        dtype="float32",
        norm_eps=1e-5,
        max_len=4096,
    )


def tunix_sampler(s: Shape, cache_size: int):
    from flax import nnx
    from tunix.generate import sampler as tunix_sampler_lib
    from tunix.models.llama3 import model as llama3

    cfg = llama3.ModelConfig(
        num_layers=s.layers,
        vocab_size=s.vocab,
        embed_dim=s.d_model,
        hidden_dim=s.mlp,
        num_heads=s.heads,
        head_dim=s.head_dim,
        num_kv_heads=s.heads,
        rope_theta=10000,
        norm_eps=1e-5,
        shd_config=llama3.ShardingConfig.get_default_sharding(is_sampling=True),
    )
    model = llama3.Llama3(cfg, rngs=nnx.Rngs(0))
    cache = tunix_sampler_lib.CacheConfig(
        cache_size=cache_size, num_layers=s.layers, num_kv_heads=s.heads, head_dim=s.head_dim
    )
    return tunix_sampler_lib.Sampler(model, IdTokenizer(s.vocab), cache)


def run(shape: str, repeats: int) -> dict:
    s = SHAPES[shape]
    b, p, t = BATCH[shape]
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, s.vocab, size=(b, p)).astype(np.int32)
    prompts[:, 0] = IdTokenizer(s.vocab).bos_id()  # Tunix's tokenize prepends BOS

    config = ours_config(s)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    params, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, get_rules("dp"))
    toks, lens = jnp.asarray(prompts), jnp.full((b,), p, jnp.int32)
    key = jax.random.PRNGKey(1)
    kw = dict(max_new_tokens=t, temperature=TEMPERATURE, eos_id=None, force_full_length=True)

    def ours():
        out = sample_lib.sample(config, params, toks, lens, key, **kw)
        return jax.block_until_ready((out.tokens, out.logprobs))

    sampler = tunix_sampler(s, p + t)
    texts = [" ".join(map(str, row[1:])) for row in prompts]
    call_kw = dict(
        max_generation_steps=t,
        max_prompt_length=p,
        temperature=TEMPERATURE,
        top_p=1.0,
        return_logprobs=True,
        seed=1,
    )

    def tunix_call():
        out = sampler(texts, **call_kw)
        return out.tokens

    def tunix_core():
        sampler.eos_ids = jnp.array([s.vocab])  # what __call__ sets from the tokenizer
        state = sampler.init_sample_state(
            jnp.asarray(prompts),
            include_logits=False,
            total_sampling_steps=p + t,
            forbidden_token_ids=None,
            temperature=TEMPERATURE,
            top_p=1.0,
            top_k=None,
            seed=jax.random.PRNGKey(1),
            beam_size=None,
            include_logprobs=True,
        )
        state = sampler._compiled_prefill_fn(
            sampler._flattened_transformer_state, state, None, echo=False
        )
        state = sampler._compiled_decode_fn(sampler._flattened_transformer_state, state)
        return jax.block_until_ready((state.token_buffer, state.logprobs_buffer))

    times = alternate(
        {"rlaif_jax": ours, "tunix_core": tunix_core, "tunix_call": tunix_call}, repeats
    )
    times["tunix"] = min(times["tunix_core"], times["tunix_call"], key=statistics.median)
    res = summary(times, b * t, "new_tokens", "rlaif_jax", "tunix")
    from importlib.metadata import version

    res.update(
        workload="sampling",
        shape=vars(s) | {"batch": b, "prompt": p, "new_tokens": t, "temperature": TEMPERATURE},
        repeats=repeats,
        versions={k: version(k) for k in ("jax", "flax", "google-tunix")},
        device=jax.devices()[0].device_kind,
        threads=THREADS,
        **environment(HOST_MALLOC),
    )
    return res


if __name__ == "__main__":
    common.main(run, __doc__.split("\n")[0])

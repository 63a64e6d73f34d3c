"""rlaif_jax's train step vs Hugging Face transformers (PyTorch eager), same Llama config.

    python bench/peers/train_vs_hf.py --shape small --json out.json

Both run one AdamW step (lr 1e-4, no weight decay) of next-token cross-entropy on
B x L random tokens: forward, backward, update; fp32 params, random weights of the same
shape (`LlamaForCausalLM` with attn_implementation='eager', untied embeddings; rlaif_jax's
`bench.make_lm_train_step`, jitted with donation). Compute is fp32, or with
`--dtype bfloat16` mixed precision on both sides: rlaif_jax's compute dtype bfloat16
(fp32 master weights, float32 logits) against PyTorch's `torch.autocast` to bfloat16.
PyTorch uses its default intra-op threads (every core), as XLA does.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

THREADS = common.pin_threads_from_argv()  # before jax / torch are imported
HOST_MALLOC = common.configure_host_malloc()  # before jax / torch allocate

import dataclasses  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from common import SHAPES, Shape, alternate, environment, summary  # noqa: E402
from sampler_vs_tunix import ours_config  # noqa: E402

from rlaif_jax import bench  # noqa: E402
from rlaif_jax.sharding import model_params  # noqa: E402
from rlaif_jax.sharding.mesh import make_mesh  # noqa: E402
from rlaif_jax.sharding.rules import get_rules  # noqa: E402

# (batch, length) per shape, as in issue #22.
BATCH = {"small": (8, 128), "large": (8, 256)}


def hf_step(s: Shape, tokens: np.ndarray, dtype: str = "float32"):
    import torch
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=s.vocab,
        hidden_size=s.d_model,
        intermediate_size=s.mlp,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.heads,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    if THREADS:
        torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM._from_config(
        cfg, attn_implementation="eager", torch_dtype=torch.float32
    )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    ids = torch.from_numpy(tokens.astype(np.int64))

    autocast = dtype == "bfloat16"

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step, {"torch": torch.__version__, "transformers": transformers.__version__}


def run(shape: str, repeats: int, dtype: str = "float32") -> dict:
    s = SHAPES[shape]
    b, length = BATCH[shape]
    tokens = np.random.default_rng(0).integers(3, s.vocab, size=(b, length)).astype(np.int32)

    config = dataclasses.replace(ours_config(s), dtype=dtype)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    params, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, get_rules("dp"))
    opt = optax.adamw(1e-4, weight_decay=0.0)
    step = bench.make_lm_train_step(config, opt)
    state = [params, opt.init(params)]
    toks = jax.numpy.asarray(tokens)

    def ours():
        state[0], state[1], loss = step(state[0], state[1], toks)
        return float(loss)

    theirs, versions = hf_step(s, tokens, dtype)
    times = alternate({"rlaif_jax": ours, "hf_eager": theirs}, repeats)
    res = summary(times, b * length, "train_tokens", "rlaif_jax", "hf_eager")
    res.update(
        workload="train_step",
        shape=vars(s) | {"batch": b, "length": length},
        repeats=repeats,
        dtype=dtype,
        versions={"jax": jax.__version__, **versions},
        device=jax.devices()[0].device_kind,
        threads=THREADS,
        **environment(HOST_MALLOC),
    )
    return res


if __name__ == "__main__":
    common.main(run, __doc__.split("\n")[0], dtypes=("float32", "bfloat16"))

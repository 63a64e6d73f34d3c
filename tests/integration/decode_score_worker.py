"""One process of the multi-process decode / RM-accuracy test (gloo CPU collectives).

argv: process_id num_processes port out_path. 8 devices in all (8 // num_processes fake
CPU devices per process) on a ('data', 'fsdp') = (4, 2) mesh. Every process holds the
same prompts and pairs, as the evaluation, sample_pairs, RL selection and reward stages
do; it runs `policy_decode.decode_policy` (evaluation decoding) and
`reward.pairwise_agreements_on` (the reward stage's held-out accuracy) and process 0
writes what it got to out_path.
"""

import json
import os
import sys

PID, NPROC, PORT, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // NPROC}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rlaif_jax import bench_rl, policy_decode, reward  # noqa: E402
from rlaif_jax.data.layout import InputLayout  # noqa: E402
from rlaif_jax.models.config import ModelConfig  # noqa: E402
from rlaif_jax.sharding import model_params  # noqa: E402
from rlaif_jax.sharding.mesh import make_mesh  # noqa: E402
from rlaif_jax.sharding.rules import get_rules  # noqa: E402
from tests.integration.local_processes import join_local_job  # noqa: E402

CONFIG = ModelConfig(
    vocab_size=128, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
    mlp_dim=64, dtype="float32", max_len=64,
)  # fmt: skip


def pair_batch(chunk):
    """tokens1/2 [B, 12], lengths1/2 [B], label [B] of pairs (i, n1, n2): row i's tokens
    are a fixed pseudo-random draw, truncated at n1 / n2."""
    out = {k: [] for k in ("tokens1", "lengths1", "tokens2", "lengths2", "label")}
    for i, n1, n2 in chunk:
        toks = np.random.default_rng(i).integers(3, CONFIG.vocab_size, size=12)
        for t, n in (("1", n1), ("2", n2)):
            out["tokens" + t].append(np.where(np.arange(12) < n, toks, 0))
            out["lengths" + t].append(n)
        out["label"].append(float(i % 2))
    return {k: np.asarray(v, np.float32 if k == "label" else np.int32) for k, v in out.items()}


def main():
    join_local_job(PID, NPROC, PORT)
    mesh, rules = make_mesh(4, 2, 1), get_rules("fsdp")
    params, _ = model_params.init_params(CONFIG, jax.random.PRNGKey(0), mesh, rules)
    rng = np.random.default_rng(0)
    prompts = [
        {"id": str(i), "context": "".join(chr(rng.integers(97, 123)) for _ in range(n))}
        for i, n in enumerate([3, 30, 9, 14, 12, 5, 7, 2, 11, 4])
    ]
    texts = policy_decode.decode_policy(
        CONFIG, params, bench_rl._CharVocab(CONFIG.vocab_size), InputLayout(max_context=32,
        max_response=4), prompts, mesh, rules, temperature=0.9, batch_size=8, seed=3,
        num_samples=2,
    )  # fmt: skip
    rm_params, _ = model_params.init_params(CONFIG, jax.random.PRNGKey(1), mesh, rules, "scalar")
    pairs = [(i, 3 + i % 9, 12 - i % 5) for i in range(13)]
    agree = reward.pairwise_agreements_on(CONFIG, rm_params, pairs, pair_batch, 8, mesh, rules)
    if jax.process_index() == 0:
        with open(OUT, "w") as f:
            json.dump(
                {
                    "process_count": jax.process_count(),
                    "device_count": jax.device_count(),
                    "texts": texts,
                    "agreements": agree.tolist(),
                },
                f,
            )


if __name__ == "__main__":
    main()

"""One process of the jax.distributed test (gloo CPU collectives).

argv: process_id num_processes port out_path. 8 devices in all (8 // num_processes
fake CPU devices per process). Each process feeds only its rows of the global batch;
the result of a sharded, jitted train step is written (by process 0) to out_path.
"""

import json
import os
import sys

PID, NPROC, PORT, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // NPROC}"
os.environ["JAX_PLATFORMS"] = "cpu"

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rlaif_jax.sharding import mesh as mesh_lib  # noqa: E402
from rlaif_jax.sharding import partition  # noqa: E402
from rlaif_jax.sharding.rules import get_rules  # noqa: E402
from tests.integration.local_processes import join_local_job  # noqa: E402


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):  # [B, 8] -> [B, 4]
        w = self.param(
            "w", nn.with_logical_partitioning(nn.initializers.normal(0.5), ("embed", "mlp")), (8, 4)
        )
        return jnp.tanh(x @ w)


def main():
    join_local_job(PID, NPROC, PORT)
    mesh = mesh_lib.make_mesh(2, 2, 2)
    rules = get_rules("fsdp_tp")
    params, shardings = partition.init_sharded(
        lambda r: Linear().init(r, jnp.zeros((1, 8)))["params"], mesh, rules, jax.random.key(0)
    )
    rng = np.random.default_rng(0)
    full = {
        "x": rng.normal(size=(16, 8)).astype(np.float32),
        "y": rng.normal(size=(16, 4)).astype(np.float32),
    }
    local = {k: v[partition.process_slice(16)] for k, v in full.items()}
    batch = partition.global_batch(local, mesh)

    def loss_fn(p, b):
        return jnp.mean((Linear().apply({"params": p}, b["x"]) - b["y"]) ** 2)

    def step(p, b):
        loss, g = jax.value_and_grad(loss_fn)(p, b)
        return jax.tree.map(lambda a, d: a - 0.5 * d, p, g), loss

    bs = {k: partition.batch_sharding(mesh, v.ndim) for k, v in batch.items()}
    jitted = partition.jit_sharded(
        step, (shardings, bs), (partition.replicated(mesh), partition.replicated(mesh))
    )
    with partition.sharding_context(mesh, rules):
        new, loss = jitted(params, batch)
    if jax.process_index() == 0:
        with open(OUT, "w") as f:
            json.dump(
                {
                    "process_count": jax.process_count(),
                    "device_count": jax.device_count(),
                    "loss": float(loss),
                    "w": np.asarray(new["w"]).tolist(),
                },
                f,
            )


if __name__ == "__main__":
    main()

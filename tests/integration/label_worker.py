"""One process of a local `rlaif-jax label` run (gin/runs/label.gin), alone or joined
with others through jax.distributed (gloo CPU collectives).

argv: process_id num_processes port workdir then the CLI's gin arguments. 8 fake CPU
devices in all (8 // num_processes per process). Prints `process_count=N
local_devices=D shards=[...]` (the label shards this process wrote) when done.
"""

import os
import sys

PID, NPROC, PORT, WORKDIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // NPROC}"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

from rlaif_jax import cli  # noqa: E402
from rlaif_jax.labeling import stage  # noqa: E402


def main() -> int:
    argv = ["label", *sys.argv[5:], f"--workdir={WORKDIR}"]
    if NPROC > 1:
        # Cross-process collectives on CPU (the stage's barrier) need gloo.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        argv += [
            f"--coordinator_address=localhost:{PORT}",
            f"--num_processes={NPROC}",
            f"--process_id={PID}",
        ]
    # Which shards this process labeled: the stage's own on_shard hook, wrapped in.
    written = []
    stage_fn = stage.label_dataset

    def label_dataset(labeler, pairs, out_dir, shard_size, seed, info, on_shard=None):
        def record(k):
            written.append(f"{os.path.basename(out_dir)}:{k}")
            if on_shard is not None:
                on_shard(k)

        return stage_fn(labeler, pairs, out_dir, shard_size, seed, info, record)

    stage.label_dataset = label_dataset
    rc = cli.main(argv)
    print(
        f"process_count={jax.process_count()} local_devices={jax.local_device_count()} "
        f"shards={written}",
        flush=True,
    )
    return rc


if __name__ == "__main__":
    sys.exit(main())

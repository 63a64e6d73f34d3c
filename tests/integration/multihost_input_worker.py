"""One process of the multi-host input test (gloo CPU collectives).

argv: process_id num_processes port data_path out_path. 8 devices in all. Each process
reads only its data shards of a TL;DR file, batches its slice of each global batch,
builds global arrays, resumes from a stored data state mid-way, and process 0 writes
the gathered global batches to out_path.
"""

import json
import os
import sys

PID, NPROC, PORT, DATA, OUT = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    sys.argv[3],
    sys.argv[4],
    sys.argv[5],
)
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // NPROC}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from rlaif_jax.data import batching, formats  # noqa: E402
from rlaif_jax.data.layout import TLDR_SUFFIX  # noqa: E402
from rlaif_jax.sharding import mesh as mesh_lib  # noqa: E402
from rlaif_jax.sharding import partition  # noqa: E402

NUM_DATA_SHARDS, GLOBAL_BATCH, STEPS, RESUME_AT = 4, 8, 7, 4


class ByteVocab:
    """UTF-8 bytes + 3 (pad 0, eos 1): enough to tokenize without TF or a model file."""

    pad_id, eos_id, bos_id = 0, 1, None

    def encode(self, s):
        return [b + 3 for b in s.encode("utf-8")]

    def decode(self, ids):
        return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", "replace")


def main():
    if NPROC > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{PORT}", num_processes=NPROC, process_id=PID
        )
    mesh = mesh_lib.make_mesh(2, 2, 2)
    vocab = ByteVocab()
    shards = batching.read_local_shards(formats.read_tldr(DATA), NUM_DATA_SHARDS)
    read = sum(len(v) for v in shards.values())

    def batch_fn(recs):
        return batching.sft_batch(
            recs, vocab, max_context=48, max_response=16, prompt_suffix=TLDR_SUFFIX
        )

    def make(state=None):
        return batching.EpochIterator(
            shards, NUM_DATA_SHARDS, GLOBAL_BATCH, seed=3, state=state, batch_fn=batch_fn
        )

    it, gathered, state = make(), [], None
    for step in range(STEPS):
        if step == RESUME_AT:  # restart from the stored position, as after preemption
            it = make(batching.DataState.from_dict(json.loads(json.dumps(state))))
        local = next(it)
        assert local["tokens"].shape[0] == GLOBAL_BATCH // NPROC
        batch = partition.global_batch(local, mesh)
        gathered.append(
            {
                k: np.asarray(multihost_utils.process_allgather(v, tiled=True)).tolist()
                for k, v in batch.items()
            }
        )
        state = it.state.to_dict()
    total_read = int(np.sum(multihost_utils.process_allgather(np.array([read]))))
    if jax.process_index() == 0:
        with open(OUT, "w") as f:
            json.dump(
                {
                    "process_count": jax.process_count(),
                    "records_read_by_process_0": read,
                    "records_read_total": total_read,
                    "batches": gathered,
                    "state": state,
                },
                f,
            )


if __name__ == "__main__":
    main()

"""Shared pieces of the peer benchmarks: the two model shapes and alternating timing.

Each script times rlaif_jax and one peer at the same model shape and batch, on the same
device, in the same process; runs alternate (ours, peer, ours, peer, ...) after three
untimed rounds of the same (compile, heap growth), so load on a shared machine hits both
sides alike.
Ratios are peer median time / our median time (> 1: rlaif_jax is faster).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable


def pin_threads_from_argv(argv: list[str] | None = None) -> int | None:
    """`--threads N` on the command line: both sides get N intra-op threads (XLA's CPU
    client and PyTorch/OpenMP/MKL). Must run before jax or torch is imported. On a
    shared, oversubscribed host, 1 thread per side keeps the comparison fair: PyTorch's
    OpenMP threads spin while waiting and lose far more than XLA's to other processes."""
    argv = sys.argv if argv is None else argv
    if "--threads" not in argv:
        return None
    n = int(argv[argv.index("--threads") + 1])
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" in flags:  # already pinned (or set by the caller)
        return n
    eigen = "true" if n > 1 else "false"
    flags += f" --xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={n}"
    os.environ["XLA_FLAGS"] = flags.strip()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    return n


def configure_host_malloc(argv: list[str] | None = None) -> str:
    """rlaif_jax's host allocator settings (`rlaif_jax.host_malloc`, which the `rlaif-jax`
    command applies at start: RLAIF_JAX_MALLOC, 'auto' by default), or glibc's defaults
    with `--default_malloc`. They are process-wide: the peer timed in the same process
    runs under them too. Before jax or torch allocate. Returns the mode in effect."""
    argv = sys.argv if argv is None else argv
    if "--default_malloc" in argv:
        return "default"
    from rlaif_jax import host_malloc  # imports no jax

    return host_malloc.configure() or "default"


@dataclasses.dataclass(frozen=True)
class Shape:
    """A random Llama-shaped model (SwiGLU, RMSNorm, RoPE, untied embeddings, no GQA)."""

    name: str
    vocab: int
    d_model: int
    layers: int
    heads: int
    mlp: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


# The two shapes of issue #22: the toy policy's and a 4x wider, 2x deeper one.
SHAPES = {
    "small": Shape("small", 768, 128, 2, 4, 384),
    "large": Shape("large", 8192, 512, 4, 8, 1536),
}


def alternate(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Runs `warmup` untimed rounds, then `repeats` timed rounds; each round calls every
    fn once, in turn. Each fn must block until its result is ready.

    The warm-up rounds alternate as the timed ones do: they cover compilation (a jitted
    step fed its own donated outputs may compile once more on its second call) and the
    growth of the shared heap to its steady size under both sides' allocations (large
    train step: rlaif_jax's step took 87k and 16k page faults in the third and fourth
    alternating rounds, none from the fifth on; bench/RESULTS.md)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def summary(times: dict[str, list[float]], work: float, unit: str, ours: str, peer: str) -> dict:
    """Medians, rates (`work` units per second) and the peer/ours time ratio."""
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "median_s": med,
        "all_s": times,
        f"{unit}_per_s": {k: work / v for k, v in med.items()},
        "ratio_peer_time_over_ours": med[peer] / med[ours],
    }


def environment(host_malloc: str) -> dict:
    """What the numbers were measured on (the load matters on a shared host); host_malloc:
    the allocator mode `configure_host_malloc` returned."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "loadavg_at_end": load,
        "machine": platform.machine(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "host_malloc": host_malloc,
        "python": platform.python_version(),
    }


def write(result: dict, path: str | None) -> None:
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


def main(
    run: Callable[..., dict],
    description: str,
    argv: list[str] | None = None,
    dtypes: tuple[str, ...] = (),
) -> None:
    """The peer scripts' command line: --shape, --repeats, --json, --threads (read again
    here for the help; `pin_threads_from_argv` applied it before the imports), and
    --dtype where the script offers `dtypes` (the first is the default); writes
    `run(shape, repeats)` (or `run(shape, repeats, dtype)`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="Intra-op threads of both sides (default: all)."
    )
    parser.add_argument(
        "--default_malloc",
        action="store_true",
        help="Both sides on glibc's default allocator settings (default: rlaif_jax's).",
    )
    if dtypes:
        parser.add_argument("--dtype", choices=dtypes, default=dtypes[0])
    args = parser.parse_args(argv)
    extra = (args.dtype,) if dtypes else ()
    write(run(args.shape, args.repeats, *extra), args.json)

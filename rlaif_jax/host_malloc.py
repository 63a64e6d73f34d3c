"""Host allocator settings for the `rlaif-jax` process: freed buffers are reused, not
unmapped.

XLA's CPU runtime allocates each execution's buffers on the host heap. With glibc's
defaults every buffer above the mmap threshold (at most 32 MiB), and every buffer a
worker thread takes from its own arena above 64 MiB, is a fresh `mmap` that `free`
returns to the kernel: each train step then page-faults through all of its activations
again. Measured on the 4-layer d_model 512 train step (bench/RESULTS.md): 157k minor
faults and 0.28 s of kernel time per 2.9 s step on one core; none under the settings
below (2.62 s). Accelerator hosts keep their activations in device memory, but their
input pipelines and checkpoint copies allocate on the host the same way.

The settings (glibc `mallopt`): one arena (every thread allocates from the main heap,
which grows without the 64 MiB cap of a thread's arena), a fixed mmap threshold at
glibc's maximum, 32 MiB (only larger blocks are mapped, each on its own), and no
trimming of the heap's free top: the process holds its peak heap for reuse, as a caching
allocator does. The first version also turned mmap off entirely; the one heap then
fragmented under many threads' interleaved large buffers, and a CoT labeling run over 8
host-platform devices peaked at 9-13 GB of host memory (once killed at 24 GB) where
glibc's defaults and these settings peak at ~5 GB (bench/RESULTS.md). Set
RLAIF_JAX_MALLOC=default to keep glibc's behaviour. The console entry point applies them
before the XLA client and its threads exist (library callers and tests, which import
`rlaif_jax` into their own processes, are left alone).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

ENV = "RLAIF_JAX_MALLOC"

# glibc <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's cap on M_MMAP_THRESHOLD for 64-bit
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, 2**31 - 1))


def configure() -> bool:
    """Applies SETTINGS through glibc's `mallopt`. Returns whether all took effect; False
    (and nothing changed) off Linux/glibc or with RLAIF_JAX_MALLOC=default."""
    if os.environ.get(ENV, "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    if not ok:
        logging.getLogger(__name__).warning("mallopt refused a host allocator setting")
    return ok

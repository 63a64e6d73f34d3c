"""Host allocator settings for the `rlaif-jax` process: how glibc hands XLA its host
buffers.

XLA's CPU runtime allocates each execution's buffers on the host heap. With glibc's
defaults every buffer above the mmap threshold (at most 32 MiB), and every buffer a
worker thread takes from its own arena above 64 MiB, is a fresh `mmap` that `free`
returns to the kernel: each train step then page-faults its large activations in again.
Measured on the peer benchmark's 4-layer d_model 512 train step (2 cores, fp32,
bench/RESULTS.md): 157k minor faults and ~0.3 s of kernel time per step, 1.63 s a step
on glibc's defaults; 25-52k faults, 0.05-0.09 s and 1.37 s under 'reuse' below.

Modes (environment variable RLAIF_JAX_MALLOC; glibc `mallopt`):
- 'reuse': one arena (every thread allocates from the main heap, which grows without a
  thread arena's 64 MiB cap), no mmap-backed blocks and no trimming of the heap's free
  top: every freed buffer stays for the next step, as a caching allocator does. The one
  heap can fragment when many threads interleave large buffers of different lifetimes:
  a labeling run over 8 host-platform devices peaked at 4.1 GB of host memory against
  2.6 GB under 'bounded' (and, before its calls were sharded, was once OOM-killed).
- 'bounded': one arena, the mmap threshold fixed at glibc's maximum (32 MiB) and no
  trimming: blocks up to 32 MiB are reused, larger ones are mapped and returned, so host
  memory stays near glibc's. A step whose buffers are larger faults like glibc's
  defaults.
- 'auto' (the default): 'reuse' where XLA computes on this host's CPU as one device (no
  TPU or GPU device nodes, or JAX_PLATFORMS=cpu, and no
  --xla_force_host_platform_device_count above 1 in XLA_FLAGS); 'bounded' otherwise, so
  an accelerator host's large checkpoint and input buffers go back to the kernel.
- 'default': glibc's defaults, untouched.

The console entry point applies them before the XLA client and its threads exist
(library callers and tests, which import `rlaif_jax` into their own processes, are left
alone).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os
import re
import sys

ENV = "RLAIF_JAX_MALLOC"
MODES = ("auto", "reuse", "bounded", "default")

# glibc <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_ARENA_MAX = -8

MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's cap on M_MMAP_THRESHOLD for 64-bit
NO_TRIM = 2**31 - 1
SETTINGS = {
    "reuse": ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NO_TRIM)),
    "bounded": (
        (M_ARENA_MAX, 1),
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX),
        (M_TRIM_THRESHOLD, NO_TRIM),
    ),
}

# Device nodes of the accelerators jax drives: TPU (accel: v2-v4, vfio: v5e and later),
# NVIDIA and AMD GPUs.
ACCELERATOR_NODES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")


def computes_on_one_host_cpu(environ=None, device_nodes=None) -> bool:
    """Whether XLA will compute on this host's CPU as a single device: JAX_PLATFORMS is
    'cpu' or no accelerator device node exists, and XLA_FLAGS does not split the CPU
    into several host-platform devices. device_nodes: the accelerator nodes present
    (default: globbed from ACCELERATOR_NODES)."""
    environ = os.environ if environ is None else environ
    forced = re.search(r"xla_force_host_platform_device_count=(\d+)", environ.get("XLA_FLAGS", ""))
    if forced and int(forced.group(1)) > 1:
        return False
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return platforms == ["cpu"]
    if device_nodes is None:
        device_nodes = [path for pattern in ACCELERATOR_NODES for path in glob.glob(pattern)]
    return not device_nodes


def resolve_mode(environ=None, device_nodes=None) -> str:
    """The mode RLAIF_JAX_MALLOC asks for, 'auto' resolved (see the module docstring)."""
    environ = os.environ if environ is None else environ
    mode = environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV}={environ[ENV]!r}: expected one of {', '.join(MODES)}")
    if mode == "auto":
        return "reuse" if computes_on_one_host_cpu(environ, device_nodes) else "bounded"
    return mode


def configure(mode: str | None = None) -> str | None:
    """Applies a mode's settings through glibc's `mallopt` (mode None: RLAIF_JAX_MALLOC,
    'auto' resolved). Returns the mode applied; None (and nothing changed) for 'default',
    off Linux/glibc, or when mallopt refused a setting (logged)."""
    mode = resolve_mode() if mode is None else mode
    if mode == "default" or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not all(mallopt(param, value) == 1 for param, value in SETTINGS[mode]):
        logging.getLogger(__name__).warning("mallopt refused a host allocator setting")
        return None
    return mode

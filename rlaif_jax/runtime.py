"""Process-level runtime: jax.distributed, TF off accelerators, host-0 logging, RNG flags."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import jax

logger = logging.getLogger("rlaif_jax")


@dataclass(frozen=True)
class DistributedConfig:
    """How to join a multi-process job.

    On Cloud TPU VMs `jax.distributed.initialize()` discovers everything
    (`auto=True`). On GPU or CPU clusters pass coordinator, process count and id.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    auto: bool = False


def hide_accelerators_from_tensorflow() -> None:
    """TF (used by seqio/tfds for input) must never grab GPU/TPU memory."""
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except Exception:  # TF absent, or devices already initialised: nothing to hide
        pass


def is_tpu_vm() -> bool:
    return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_ACCELERATOR_TYPE"))


def initialize(dist: DistributedConfig | None = None) -> None:
    """Sets JAX flags, initialises jax.distributed when asked (or on a TPU VM pod), logging.

    Safe to call more than once.
    """
    jax.config.update("jax_threefry_partitionable", True)
    hide_accelerators_from_tensorflow()
    dist = dist or DistributedConfig()
    explicit = dist.coordinator_address is not None and (dist.num_processes or 1) > 1
    if explicit or dist.auto or (is_tpu_vm() and "TPU_WORKER_HOSTNAMES" in os.environ):
        if not jax.distributed.is_initialized():
            kwargs = {}
            if explicit:
                kwargs = dict(
                    coordinator_address=dist.coordinator_address,
                    num_processes=dist.num_processes,
                    process_id=dist.process_id,
                )
                if dist.local_device_ids is not None:
                    kwargs["local_device_ids"] = list(dist.local_device_ids)
            jax.distributed.initialize(**kwargs)
    setup_logging()


COMPILE_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
COMPILE_CACHE_SUBDIR = os.path.join("cache", "jax_compile")
COMPILE_CACHE_MIN_SECONDS = 0.2


@contextlib.contextmanager
def compilation_cache(workdir: str | None) -> Iterator[str | None]:
    """JAX's persistent compilation cache in WORKDIR/cache/jax_compile while the block runs,
    so the stages of one experiment that compile the same programs (both RMs' train
    steps, every RL arm's sampler and update, the evaluation's decoders) compile them
    once, and a resumed run compiles nothing it compiled before. Yields the cache
    directory, or None where it is left off: an explicit `JAX_COMPILATION_CACHE_DIR` (or
    jax config) wins and is left as it is; a remote (gs://) work directory gets none, as
    the cache wants a local path. Programs that compile in under 0.2 s are not written.
    On exit the process's jax config is as before (in-process callers, e.g. tests)."""
    explicit = os.environ.get(COMPILE_CACHE_ENV) or jax.config.jax_compilation_cache_dir
    if explicit or not workdir or "://" in workdir:
        yield explicit or None
        return
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    cache_dir = os.path.abspath(os.path.join(workdir, COMPILE_CACHE_SUBDIR))
    os.makedirs(cache_dir, exist_ok=True)
    min_seconds = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECONDS)
    jax_cache.reset_cache()
    logger.info("JAX compilation cache: %s", cache_dir)
    try:
        yield cache_dir
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_seconds)
        jax_cache.reset_cache()


def is_host0() -> bool:
    return jax.process_index() == 0


def setup_logging(level: int = logging.INFO) -> None:
    """INFO logs on host 0, warnings only elsewhere, one format everywhere."""
    root = logging.getLogger("rlaif_jax")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [p%(process_id)s] %(name)s: %(message)s")
        )
        handler.addFilter(_ProcessIdFilter())
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level if is_host0() else logging.WARNING)


class _ProcessIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.process_id = jax.process_index()
        return True

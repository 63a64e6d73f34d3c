"""Process-level runtime: jax.distributed, TF off accelerators, host-0 logging, RNG flags."""

from __future__ import annotations

import logging
import os
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

"""Metrics to JSONL + TensorBoard (host 0), and a progress line with rate and ETA."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping

import jax

logger = logging.getLogger("rlaif_jax.train")


class MetricsWriter:
    """Appends {'step': s, **metrics} rows to `path` (JSONL) and TensorBoard scalars.

    On resume, rows past the restored step are dropped (`truncate_after`) so the file
    matches an uninterrupted run.
    """

    def __init__(self, jsonl_path: str, tensorboard_dir: str | None = None):
        self.path = jsonl_path
        self.enabled = jax.process_index() == 0
        self._tb = None
        if self.enabled:
            os.makedirs(os.path.dirname(jsonl_path), exist_ok=True)
            if tensorboard_dir:
                try:
                    from tensorboardX import SummaryWriter

                    self._tb = SummaryWriter(tensorboard_dir)
                except ImportError:
                    logger.warning("tensorboardX missing: TensorBoard logs disabled")

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not os.path.isfile(self.path):
            return
        with open(self.path) as f:
            rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
        with open(self.path, "w") as f:
            f.writelines(rows)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Progress:
    """Logs 'stage: step s/N (x steps/s, y tokens/s, ETA t s) metrics' every `every` steps.

    Rates are measured from the first step this process ran, so they exclude compilation
    (which the first step pays).
    """

    def __init__(self, stage: str, total_steps: int, start_step: int = 0, every: int = 10):
        self.stage, self.total, self.every = stage, total_steps, max(1, every)
        self.first_step: int | None = None
        self.first_time = time.time()
        self.tokens = 0.0

    def update(self, step: int, metrics: Mapping[str, float], tokens: float = 0.0) -> None:
        if self.first_step is None:  # clock starts after the first (compiling) step
            self.first_step, self.first_time = step, time.time()
        else:
            self.tokens += tokens
        if step % self.every and step != self.total:
            return
        elapsed = time.time() - self.first_time
        done = step - self.first_step
        rate = done / elapsed if done and elapsed > 0 else float("nan")
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        token_rate = self.tokens / elapsed if done and elapsed > 0 else float("nan")
        shown = " ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:6])
        logger.info(
            "%s: step %d/%d (%.2f steps/s, %.0f tokens/s, ETA %.0f s) %s",
            self.stage,
            step,
            self.total,
            rate,
            token_rate,
            eta,
            shown,
        )

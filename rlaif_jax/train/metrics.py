"""A run's metrics (host 0): the JSONL file, TensorBoard and W&B through CLU writers
(`train.metric_writers`), and progress — a tqdm bar on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import IO

import jax

logger = logging.getLogger("rlaif_jax.train")


class MetricsWriter:
    """Writes {'step': s, **metrics} rows to `jsonl_path` (every value, NaN included) and
    the finite values to the dashboards: TensorBoard under `tensorboard_dir` (None: off)
    and W&B (`wandb_project`; needs the wandb package). Paths may be local or URIs.

    On resume, rows past the restored step are dropped (`truncate_after`) so the file
    matches an uninterrupted run. `flush()` makes every row written so far durable (on an
    object store the JSONL file is rewritten whole: see `metric_writers.JsonlWriter`).
    """

    def __init__(
        self,
        jsonl_path: str,
        tensorboard_dir: str | None = None,
        wandb_project: str | None = None,
        run_name: str | None = None,
    ):
        self.path = jsonl_path
        self.enabled = jax.process_index() == 0
        self._jsonl = self._dashboards = None
        if self.enabled:
            from rlaif_jax.train import metric_writers

            self._jsonl = metric_writers.JsonlWriter(jsonl_path)
            self._dashboards = metric_writers.dashboard_writer(
                tensorboard_dir, wandb_project, run_name
            )
            self._finite = metric_writers.finite

    def truncate_after(self, step: int) -> None:
        if self.enabled:
            self._jsonl.truncate_after(step)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write_scalars(step, metrics)
        scalars = self._finite(metrics)
        if scalars:
            self._dashboards.write_scalars(int(step), scalars)

    def flush(self) -> None:
        if self.enabled:
            self._jsonl.flush()
            self._dashboards.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._dashboards.close()


class Progress:
    """Progress of a run from `start_step` to `total_steps`, with step and token rates.

    On a terminal (`stream.isatty()`, default stderr) and host 0: a tqdm bar updated every
    step, its postfix (rates, the first metrics) every `every` steps. Otherwise a log line
    'stage: step s/N (x steps/s, y tokens/s, ETA t s) metrics' every `every` steps and at
    the last. Rates are measured from the first step this process ran, so they exclude
    compilation (which the first step pays).
    """

    def __init__(
        self,
        stage: str,
        total_steps: int,
        start_step: int = 0,
        every: int = 10,
        stream: IO[str] | None = None,
    ):
        self.stage, self.total, self.every = stage, total_steps, max(1, every)
        self.first_step: int | None = None
        self.first_time = time.time()
        self.tokens = 0.0
        self._bar = None
        stream = sys.stderr if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        if jax.process_index() == 0 and isatty is not None and isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_steps,
                initial=start_step,
                desc=stage,
                unit="step",
                file=stream,
                dynamic_ncols=True,
                leave=True,
            )
        self._shown = start_step

    def update(self, step: int, metrics: Mapping[str, float], tokens: float = 0.0) -> None:
        if self.first_step is None:  # clock starts after the first (compiling) step
            self.first_step, self.first_time = step, time.time()
        else:
            self.tokens += tokens
        if self._bar is not None:
            self._bar.update(step - self._shown)
            self._shown = step
        if step % self.every and step != self.total:
            return
        elapsed = time.time() - self.first_time
        done = step - self.first_step
        rate = done / elapsed if done and elapsed > 0 else float("nan")
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        token_rate = self.tokens / elapsed if done and elapsed > 0 else float("nan")
        shown = list(metrics.items())[:6]
        if self._bar is not None:
            self._bar.set_postfix(
                {"tokens/s": f"{token_rate:.0f}", **{k: f"{v:.4g}" for k, v in shown}},
                refresh=True,
            )
            return
        logger.info(
            "%s: step %d/%d (%.2f steps/s, %.0f tokens/s, ETA %.0f s) %s",
            self.stage,
            step,
            self.total,
            rate,
            token_rate,
            eta,
            " ".join(f"{k}={v:.4g}" for k, v in shown),
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

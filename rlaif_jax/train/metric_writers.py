"""CLU metric writers of a training run: the JSONL file, TensorBoard and Weights & Biases.

All are `clu.metric_writers.MetricWriter`s, so a user can compose them with CLU's own
(`MultiWriter`, `AsyncWriter`, `LoggingWriter`):

- `JsonlWriter`: one `{"step": s, name: value, ...}` row per `write_scalars` call in
  `path` (local or a URI, through `rlaif_jax.fs`). Locally each row is appended at once;
  an object store cannot append, so there the rows are kept and the whole file is
  rewritten (one write-once object) on `flush` — the loop flushes at every checkpoint
  and at the end, so every row up to the last checkpoint is always stored, and a resumed
  run drops the rows past its checkpoint anyway (`truncate_after`).
- TensorBoard: CLU's `SummaryWriter` (tf.summary), which writes through tf.io.gfile
  itself, so a gs:// log directory needs nothing from us.
- `WandbWriter`: scalars to a W&B run (`wandb.init(project=...)`), when the `wandb`
  package is installed and a setting names a project (`TrainSettings.wandb_project`).

Importing this module imports CLU's writers (and with them TensorFlow).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from clu import metric_writers

from rlaif_jax import fs


class _ScalarWriter(metric_writers.MetricWriter):
    """A MetricWriter that records scalars only (images, texts, ... are ignored)."""

    def write_summaries(self, step, values, metadata=None):
        del step, values, metadata

    def write_images(self, step, images):
        del step, images

    def write_videos(self, step, videos):
        del step, videos

    def write_audios(self, step, audios, *, sample_rate):
        del step, audios, sample_rate

    def write_texts(self, step, texts):
        del step, texts

    def write_histograms(self, step, arrays, num_buckets=None):
        del step, arrays, num_buckets

    def write_hparams(self, hparams):
        del hparams

    def flush(self):
        pass

    def close(self):
        self.flush()


class JsonlWriter(_ScalarWriter):
    """Rows `{"step": s, **scalars}` (floats; NaN kept) in the JSONL file `path`.

    flush_seconds: on an object store, also rewrite the file when a write comes this
    long after the last rewrite (so a live run's file is never far behind)."""

    def __init__(self, path: str, flush_seconds: float = 60.0):
        self.path = path
        self._append = fs.can_append(path)
        self._rows: list[str] | None = None if self._append else self._read_rows()
        self._dirty = False
        self._flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        if self._append:
            fs.makedirs(os.path.dirname(path))

    def _read_rows(self) -> list[str]:
        if not fs.isfile(self.path):
            return []
        return [line + "\n" for line in fs.read_text(self.path).split("\n") if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drops rows past `step` (a resumed run rewrites them)."""
        rows = self._read_rows() if self._rows is None else self._rows
        kept = [r for r in rows if json.loads(r).get("step", 0) <= step]
        if self._append:
            if fs.isfile(self.path):
                fs.atomic_write(self.path, "".join(kept))
        else:
            self._dirty = self._dirty or kept != rows
            self._rows = kept
            self.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}})
        if self._append:
            fs.append_text(self.path, row + "\n")
            return
        self._rows.append(row + "\n")
        self._dirty = True
        if time.monotonic() - self._last_flush >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._append or not self._dirty:
            return
        fs.atomic_write(self.path, "".join(self._rows))
        self._dirty = False
        self._last_flush = time.monotonic()


class WandbWriter(_ScalarWriter):
    """Scalars to a Weights & Biases run of `project` (finite values only)."""

    def __init__(self, project: str, name: str | None = None, config: Mapping | None = None):
        import wandb

        self._run = wandb.init(project=project, name=name, config=dict(config or {}))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._run.log({k: float(v) for k, v in scalars.items()}, step=int(step))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._run.config.update(dict(hparams), allow_val_change=True)

    def close(self) -> None:
        self._run.finish()


def wandb_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("wandb") is not None


def dashboard_writer(
    tensorboard_dir: str | None,
    wandb_project: str | None = None,
    run_name: str | None = None,
) -> metric_writers.MetricWriter:
    """TensorBoard (when `tensorboard_dir`) and W&B (when `wandb_project`) as one writer.

    A named W&B project without the `wandb` package is an error: the run would otherwise
    seem to log where it does not."""
    writers: list[metric_writers.MetricWriter] = []
    if tensorboard_dir:
        _keep_tensorflow_off_accelerators()
        writers.append(metric_writers.SummaryWriter(tensorboard_dir))
    if wandb_project:
        if not wandb_available():
            raise ImportError(
                f"TrainSettings.wandb_project = {wandb_project!r} (or RLSettings.wandb_project) "
                "asks for a Weights & Biases writer, but the wandb package is not installed: "
                "`pip install wandb`, or unset the binding."
            )
        writers.append(WandbWriter(wandb_project, name=run_name))
    return metric_writers.MultiWriter(writers)


def _keep_tensorflow_off_accelerators() -> None:
    """The TensorBoard writer starts TensorFlow's runtime, which would otherwise claim
    the GPU/TPU memory JAX trains in (the CLI does this already; Colab and Python callers
    may not). Too late once TF has initialised its devices: then nothing to do."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass


def finite(scalars: Mapping[str, Any]) -> dict[str, float]:
    """The finite values of `scalars` (dashboards plot no NaN/inf)."""
    return {k: float(v) for k, v in scalars.items() if math.isfinite(float(v))}

"""A run's metrics: the JSONL rows (exactly as before, NaN kept; on an object store
rewritten whole at flush), CLU writers for TensorBoard and W&B, and progress as a tqdm
bar on a terminal or log lines otherwise."""

import io
import json
import logging
import math
import os
import sys
import types

import pytest

from rlaif_jax import fs
from rlaif_jax.train import metric_writers
from rlaif_jax.train.metrics import MetricsWriter, Progress
from tests.fake_gcs import fake_gcs  # noqa: F401  (fixture)


def test_jsonl_rows_truncation_and_tensorboard(tmp_path):
    path = tmp_path / "logs" / "sft" / "metrics.jsonl"
    w = MetricsWriter(str(path), str(tmp_path / "tb"))
    w.write(1, {"loss": 0.5, "grad_norm": 2})
    w.write(2, {"loss": float("nan")})
    w.write(3, {"loss": 0.25})
    w.close()
    assert path.read_text() == (
        '{"step": 1, "loss": 0.5, "grad_norm": 2.0}\n'
        '{"step": 2, "loss": NaN}\n'
        '{"step": 3, "loss": 0.25}\n'
    )
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))
    resumed = MetricsWriter(str(path))  # a run resumed from step 2 drops step 3's row
    resumed.truncate_after(2)
    resumed.write(3, {"loss": 0.125})
    resumed.close()
    assert [json.loads(r)["step"] for r in path.read_text().splitlines()] == [1, 2, 3]
    assert json.loads(path.read_text().splitlines()[-1])["loss"] == 0.125


def test_jsonl_on_an_object_store_is_rewritten_at_flush(fake_gcs):  # noqa: F811
    path = "gs://bkt/logs/rm/metrics.jsonl"
    w = metric_writers.JsonlWriter(path)
    w.write_scalars(1, {"loss": 1.0})
    assert not fs.exists(path)  # no append on a store: rows wait for the flush
    w.write_scalars(2, {"loss": 0.5})
    w.flush()
    assert fs.read_text(path) == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n'
    w.write_scalars(3, {"loss": 0.25})
    w.close()
    resumed = metric_writers.JsonlWriter(path)
    resumed.truncate_after(1)
    assert fs.read_text(path) == '{"step": 1, "loss": 1.0}\n'


class _FakeRun:
    def __init__(self, **init):
        self.init, self.logged, self.finished = init, [], False
        self.config = types.SimpleNamespace(update=lambda *a, **k: None)

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


def test_wandb_writer_when_asked_and_installed(tmp_path, monkeypatch):
    runs = []
    fake = types.ModuleType("wandb")
    fake.__spec__ = types.SimpleNamespace(name="wandb")
    fake.init = lambda **kw: runs.append(_FakeRun(**kw)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    w = MetricsWriter(str(tmp_path / "m.jsonl"), None, wandb_project="rlaif", run_name="sft")
    w.write(1, {"loss": 0.5, "bad": math.inf})
    w.close()
    (run,) = runs
    assert run.init["project"] == "rlaif" and run.init["name"] == "sft"
    assert run.logged == [(1, {"loss": 0.5})] and run.finished  # dashboards get finite values
    assert "Infinity" in (tmp_path / "m.jsonl").read_text()  # the JSONL keeps every value


def test_wandb_asked_but_missing_names_the_binding(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # not importable
    with pytest.raises(ImportError, match=r"TrainSettings\.wandb_project = 'rlaif'"):
        MetricsWriter(str(tmp_path / "m.jsonl"), wandb_project="rlaif")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise():
    term = _Terminal()
    bar = Progress("sft", total_steps=4, start_step=1, every=2, stream=term)
    for s in (2, 3, 4):
        bar.update(s, {"loss": 0.5}, tokens=10)
    bar.close()
    shown = term.getvalue()
    assert "sft" in shown and "4/4" in shown and "loss=0.5" in shown

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("rlaif_jax.train")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        pipe = io.StringIO()  # not a terminal
        lines = Progress("rm", total_steps=4, every=2, stream=pipe)
        for s in (1, 2, 3, 4):
            lines.update(s, {"loss": 0.5}, tokens=10)
        lines.close()
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    messages = [r.getMessage() for r in records]
    assert pipe.getvalue() == ""
    assert [m.split(" (")[0] for m in messages] == ["rm: step 2/4", "rm: step 4/4"]
    assert all("steps/s" in m and "ETA" in m and "loss=0.5" in m for m in messages)

"""`rlaif-jax sft` in subprocesses: SIGKILL after a checkpoint, then a restart, ends with
the same params and metrics as an uninterrupted run; SIGTERM saves a checkpoint and exits 0."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rlaif_jax.models.config import get_config
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.rules import get_rules
from rlaif_jax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 8


def _cmd(workdir, steps=STEPS, save_every=2):
    return [
        sys.executable,
        "-m",
        "rlaif_jax",
        "sft",
        "--gin_file",
        "test/sft_smoke.gin",
        f"--gin.WORKDIR='{workdir}'",
        f"--gin.sft/TrainSettings.num_steps={steps}",
        f"--gin.sft/TrainSettings.save_every={save_every}",
        # Two fake devices per process: data 2 (the test process itself has 8).
        "--gin.make_mesh.data=2",
        "--gin.make_mesh.fsdp=1",
        "--gin.make_mesh.tensor=1",
    ]


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory):
    """The runs compile the same programs: share them through jax's persistent cache."""
    global _CACHE
    _CACHE = str(tmp_path_factory.mktemp("jax_cache"))


_CACHE = None


def _env():
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def _start(cmd):
    return subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _params(workdir):
    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    structs, _ = model_params.abstract_params(get_config("tiny"), mesh, get_rules("dp"))
    return checkpoint.restore_params(os.path.join(workdir, "sft", "ckpt"), structs)


def _rows(workdir):
    with open(os.path.join(workdir, "logs", "sft", "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _wait(condition, proc, what, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"run ended before {what}: {proc.stdout.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _ckpt_steps(workdir):
    d = os.path.join(workdir, "sft", "ckpt")
    return [int(s) for s in os.listdir(d) if s.isdigit()] if os.path.isdir(d) else []


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    # The reference run and the run to be killed share the two cores.
    ref, proc = _start(_cmd(full)), _start(_cmd(killed))
    _wait(lambda: any(s >= 2 for s in _ckpt_steps(killed)), proc, "a checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "sft" / "COMPLETE").exists()
    out = subprocess.run(_cmd(killed), env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from step" in out.stderr
    assert ref.wait(timeout=300) == 0, ref.stdout.read()[-3000:]
    a, b = _params(full), _params(killed)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    ra, rb = _rows(full), _rows(killed)
    assert [r["step"] for r in rb] == list(range(1, STEPS + 1))
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys()
        np.testing.assert_allclose([x[k] for k in x], [y[k] for k in x], rtol=1e-6)
    done = json.loads((killed / "sft" / "COMPLETE").read_text())["metrics"]
    assert done["loss"] == pytest.approx(ra[-1]["loss"], rel=1e-6)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = _start(_cmd(tmp_path, steps=100000, save_every=0))
    metrics = tmp_path / "logs" / "sft" / "metrics.jsonl"
    _wait(lambda: metrics.is_file() and metrics.stat().st_size > 0, proc, "the first step")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    steps = _ckpt_steps(tmp_path)
    assert len(steps) == 1 and 1 <= steps[0] < 100000  # save_every=0: only SIGTERM saved
    assert not (tmp_path / "sft" / "COMPLETE").exists()
    assert [r["step"] for r in _rows(tmp_path)][-1] == steps[0]

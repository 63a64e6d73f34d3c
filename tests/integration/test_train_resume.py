"""The shared train loop through `rlaif-jax sft`: SIGKILL after a checkpoint then restart
== uninterrupted run; SIGTERM saves before exiting; corrupt/missing checkpoints are named."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rlaif_jax.models import model as model_lib
from rlaif_jax.models.config import get_config
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding.rules import get_rules
from rlaif_jax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 12


def _cmd(workdir):
    return [
        sys.executable,
        "-m",
        "rlaif_jax",
        "sft",
        "--gin_file",
        "test/toy_tiny.gin",
        f"--gin.sft/TrainSettings.num_steps={STEPS}",
        "--workdir",
        str(workdir),
    ]


def _env():
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    return env


def _params(workdir):
    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    structs, _ = model_lib.abstract_params(get_config("tiny"), mesh, get_rules("dp"))
    return checkpoint.restore_params(os.path.join(workdir, "sft", "ckpt"), structs)


def _rows(workdir):
    with open(os.path.join(workdir, "logs", "sft", "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _wait_for_step_dir(ckpt_dir, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isdir(ckpt_dir) and any(
            d.isdigit() and int(d) >= 2 for d in os.listdir(ckpt_dir)
        ):
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before its first checkpoint: {proc.stdout.read()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail("no checkpoint appeared")


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cmd(full), env=_env(), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(
        _cmd(killed), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _wait_for_step_dir(os.path.join(killed, "sft", "ckpt"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "sft", "COMPLETE"))
    out = subprocess.run(_cmd(killed), env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from step" in out.stderr
    a, b = _params(full), _params(killed)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    ra, rb = _rows(full), _rows(killed)
    assert [r["step"] for r in rb] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([r["loss"] for r in ra], [r["loss"] for r in rb], rtol=1e-6)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    cmd = _cmd(tmp_path)
    cmd[cmd.index(f"--gin.sft/TrainSettings.num_steps={STEPS}")] = (
        "--gin.sft/TrainSettings.num_steps=100000"
    )
    cmd += ["--gin.TrainSettings.save_every=0"]
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    metrics = os.path.join(tmp_path, "logs", "sft", "metrics.jsonl")
    deadline = time.time() + 240
    while not (os.path.isfile(metrics) and os.path.getsize(metrics) > 0):
        assert time.time() < deadline and proc.poll() is None, "training never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    steps = [int(d) for d in os.listdir(os.path.join(tmp_path, "sft", "ckpt")) if d.isdigit()]
    assert steps and max(steps) < 100000
    assert not os.path.exists(os.path.join(tmp_path, "sft", "COMPLETE"))


def test_missing_and_corrupt_checkpoints_are_named(tmp_path):
    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    structs, _ = model_lib.abstract_params(get_config("tiny"), mesh, get_rules("dp"))
    with pytest.raises(checkpoint.CheckpointError, match="No checkpoint directory .*nope"):
        checkpoint.restore_params(str(tmp_path / "nope"), structs)
    params, _ = model_lib.init_params(
        get_config("tiny"), jax.random.PRNGKey(0), mesh, get_rules("dp")
    )
    ckpt = tmp_path / "ckpt"
    checkpoint.save_params(str(ckpt), params)
    # Damage every array file of step 0.
    for root, _, files in os.walk(ckpt / "0"):
        for f in files:
            if "params" in root and not f.endswith(".json"):
                with open(os.path.join(root, f), "wb") as fh:
                    fh.write(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match=str(ckpt)):
        checkpoint.restore_params(str(ckpt), structs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="holds no finished checkpoint"):
        checkpoint.restore_params(str(empty), structs)

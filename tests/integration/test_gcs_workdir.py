"""`rlaif-jax sft --workdir gs://...` end to end on an offline Cloud Storage
(tests/fake_gcs.py): the run is killed by SIGTERM after step 2 (the TPU VM preemption
path: save, wait for the async checkpoint, exit 0), rerun, and resumes at step 3. Every
artifact — orbax checkpoints, metrics JSONL, model.json, spm.model, COMPLETE, config.gin —
is an object in the bucket, and no local file or folder appears (cwd and TMPDIR stay
empty: no ./gs:/ directory, the bug of issue 23). TensorBoard is off here: TensorFlow's
own GCS client cannot be pointed at the fake (see tests/fake_gcs.py)."""

import json
import os
import signal
import tempfile

import gin
import pytest

from rlaif_jax import cli, fs
from rlaif_jax.train import loop
from tests.fake_gcs import fake_gcs  # noqa: F401  (fixture)

WORKDIR = "gs://bkt/run"
_REAL_JIT_STEPPER = loop.jit_stepper
ARGS = [
    "sft",
    "--gin_file",
    "test/sft_smoke.gin",
    "--workdir",
    WORKDIR,
    "--gin.sft/TrainSettings.num_steps=3",
    "--gin.sft/TrainSettings.save_every=1",
    "--gin.sft/TrainSettings.keep=2",
    "--gin.sft/TrainSettings.tensorboard=False",
    # Plain data parallelism: the file system is under test here, not the layout.
    "--gin.get_rules.name='dp'",
    "--gin.make_mesh.data=8",
    "--gin.make_mesh.fsdp=1",
    "--gin.make_mesh.tensor=1",
]


def _count_steps(monkeypatch, sigterm_after=None):
    """Counts the steps the stage runs; sends this process SIGTERM after the
    `sigterm_after`-th (a preemption)."""
    real, calls = _REAL_JIT_STEPPER, []

    def jit_stepper(*args, **kwargs):
        stepper = real(*args, **kwargs)

        def run(state, local):
            out = stepper(state, local)
            calls.append(1)
            if len(calls) == sigterm_after:
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        return run

    monkeypatch.setattr(loop, "jit_stepper", jit_stepper)
    return calls


def test_sft_on_gs_is_killed_resumes_and_writes_nothing_local(
    fake_gcs,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    first = _count_steps(monkeypatch, sigterm_after=2)
    with pytest.raises(SystemExit) as killed:
        cli.main(ARGS)
    assert killed.value.code == 0 and len(first) == 2
    assert not fs.exists(f"{WORKDIR}/sft/COMPLETE")
    assert sorted(fs.listdir(f"{WORKDIR}/sft/ckpt")) == ["1", "2"]
    # The killed run left its config (as parsed at the start).
    assert "as parsed at its start" in fs.read_text(f"{WORKDIR}/config_sft.gin")
    rows = fs.read_text(f"{WORKDIR}/logs/sft/metrics.jsonl").splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2]

    second = _count_steps(monkeypatch)
    gin.clear_config()
    assert cli.main(ARGS) == 0
    assert len(second) == 1  # resumed at step 3 from the checkpoint of step 2

    done = json.loads(fs.read_text(f"{WORKDIR}/sft/COMPLETE"))["metrics"]
    assert done["num_steps"] == 3
    rows = fs.read_text(f"{WORKDIR}/logs/sft/metrics.jsonl").splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3]
    assert sorted(fs.listdir(f"{WORKDIR}/sft/ckpt")) == ["2", "3"]  # keep=2 deleted step 1
    assert fs.read_text(f"{WORKDIR}/config.gin").startswith("# Operative gin config")
    names = {k.removeprefix("/bkt/run/") for k in fake_gcs}
    assert {"sft/model.json", "sft/spm.model", "sft/COMPLETE", "config.gin"} <= names
    assert any(n.startswith("sft/ckpt/3/state/") for n in names)
    # Nothing local: no ./gs:/bkt/..., no temporary files.
    assert os.listdir(cwd) == [] and os.listdir(tmp) == []

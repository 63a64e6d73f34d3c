"""Asynchronous checkpoints (train.checkpoint + train.loop): steps run while a slow save
is written, the next save / the end / SIGTERM wait for it, and the saved state is the
one of its step even though later steps donate the buffers.

The save is made slow on purpose (orbax's JSON item sleeps SLOW seconds in its commit)
and the test compares step completion times with the save's own window — ordering and a
gap measured against SLOW, not tight timings, so it holds on 2 busy cores."""

import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler as json_handler

from rlaif_jax.train import checkpoint, loop
from rlaif_jax.train import state as train_state

SLOW = 1.5  # seconds the background part of each save takes


@pytest.fixture
def slow_saves(monkeypatch):
    """Makes every checkpoint's commit take SLOW seconds; yields [(start, end)] of each."""
    windows = []
    real = json_handler.JsonCheckpointHandler._save_fn

    async def slow(self, item, directory):
        start = time.monotonic()
        time.sleep(SLOW)
        await real(self, item, directory)
        windows.append((start, time.monotonic()))

    monkeypatch.setattr(json_handler.JsonCheckpointHandler, "_save_fn", slow)
    return windows


def _run(tmp_path, async_checkpoints, num_steps=6, save_every=3, sigterm_at=None):
    """A tiny donating jitted step (w += 1) through run_training; returns step end times."""
    state = train_state.TrainState.create({"w": jnp.zeros((64, 64))}, optax.sgd(0.1))

    def update(st):
        st = st.replace(step=st.step + 1, params=jax.tree.map(lambda w: w + 1, st.params))
        return st, {"loss": jnp.mean(st.params["w"])}

    update = jax.jit(update, donate_argnums=0)
    ends = {}

    def step(st, local):
        st, metrics = update(st)
        jax.block_until_ready(st)
        ends[local] = time.monotonic()
        if local == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return st, metrics

    settings = loop.LoopSettings(
        num_steps=num_steps, save_every=save_every, keep=5, async_checkpoints=async_checkpoints
    )
    out = loop.run_training(
        stage="t",
        state=state,
        step=step,
        make_batches=lambda pos: iter(range(1, num_steps + 1)),
        data_position=lambda it: {},
        settings=settings,
        ckpt_dir=str(tmp_path / "ckpt"),
        metrics_path=str(tmp_path / "metrics.jsonl"),
    )
    return out, ends


def test_steps_overlap_a_slow_save_and_the_saved_state_is_its_step(tmp_path, slow_saves):
    (state, _), ends = _run(tmp_path / "async", async_checkpoints=True)
    (save3, end3), (save6, _) = slow_saves
    # Steps 4..6 ran while step 3's checkpoint was being written...
    assert all(ends[s] < end3 for s in (4, 5, 6))
    assert ends[4] - ends[3] < SLOW / 2
    # ...and the save of step 6 waited for it (one save at a time).
    assert save6 >= end3
    # The checkpoint of step 3 holds step 3's values although steps 4..6 donated them.
    ckpt = checkpoint.Checkpointer(str(tmp_path / "async" / "ckpt"))
    target = jax.tree.map(jnp.zeros_like, state)
    restored, meta = ckpt.restore(target, step=3)
    ckpt.close()
    assert meta["step"] == 3 and int(restored.step) == 3
    np.testing.assert_array_equal(np.asarray(restored.params["w"]), np.full((64, 64), 3.0))
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.full((64, 64), 6.0))

    slow_saves.clear()
    _, sync_ends = _run(tmp_path / "sync", async_checkpoints=False)
    (_, sync_end3), _ = slow_saves
    # Without async saves the step after a checkpoint waits for the whole save.
    assert sync_ends[4] > sync_end3 and sync_ends[4] - sync_ends[3] >= SLOW * 0.9


def test_sigterm_waits_for_the_save_before_exiting(tmp_path, slow_saves):
    with pytest.raises(SystemExit) as stop:
        _run(tmp_path, async_checkpoints=True, num_steps=6, save_every=0, sigterm_at=2)
    exited = time.monotonic()
    assert stop.value.code == 0
    ((_, end2),) = slow_saves
    assert exited >= end2  # the SIGTERM save was committed before the exit
    ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
    assert ckpt.latest_step() == 2
    ckpt.close()

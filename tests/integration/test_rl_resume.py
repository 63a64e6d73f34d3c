"""Kill-and-resume gives the same parameters and metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rlaif_jax.rl import stage
from rlaif_jax.rl.runner import RLSettings
from tests.integration import rl_fakes

SETTINGS = RLSettings(
    batch_size=8,
    samples_per_prompt=2,
    learning_rate=3e-3,
    max_response=6,
    max_context=4,
    num_epochs=2,
    checkpoint_every=100,
    normalize_rewards=True,
    whiten_advantages=True,
)


def reward_fn(contexts, responses):
    return np.array([r.count("f") / max(len(r), 1) + 0.25 for r in responses], np.float32)


def _rows(path):
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    records = rl_fakes.prompts(20)
    full = rl_fakes.make_runner(SETTINGS, reward_fn)
    stage.train(full, records, str(tmp_path / "full"))

    part = str(tmp_path / "part")
    killed = rl_fakes.make_runner(SETTINGS, reward_fn)
    stage.train(killed, records, part, stop_after=3)  # "killed" after step 3 (saved)
    with open(os.path.join(part, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 4, "reward_mean": -1.0}) + "\n")  # lost step's row
    resumed = rl_fakes.make_runner(SETTINGS, reward_fn)
    stage.train(resumed, records, part)

    a, b = jax.device_get(full.state), jax.device_get(resumed.state)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    rows_a, rows_b = _rows(str(tmp_path / "full")), _rows(part)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == list(range(1, 5))
    for ra, rb in zip(rows_a, rows_b):
        for k in ("reward_mean", "kl", "loss", "value_loss"):
            assert ra[k] == rb[k], (k, ra["step"])
    assert float(b.reward_stats.count) == 4 * 16  # running reward stats resumed too

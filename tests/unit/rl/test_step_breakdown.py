"""The RL step's time breakdown (issue #22): rollout, reward, forward, update shares."""

import jax
import numpy as np
import pytest

from rlaif_jax.rl import runner as runner_lib
from rlaif_jax.rl.runner import RLSettings
from tests.integration import rl_fakes

PARTS = ("rollout", "reward", "forward", "update")


def test_step_breakdown_shares_and_loop_rate():
    info = {"rollout_s": 3.0, "reward_s": 1.0, "forward_s": 0.5}
    out = runner_lib.step_breakdown(info, update_s=0.5, step_s=5.0, tokens=100.0)
    assert out["time_rollout_share"] == pytest.approx(0.6)
    assert out["time_update_seconds"] == 0.5
    assert sum(out[f"time_{p}_share"] for p in PARTS) == pytest.approx(1.0)
    assert out["loop_tokens_per_s"] == pytest.approx(20.0)
    assert out["step_seconds"] == 5.0


def test_runner_step_reports_the_breakdown():
    settings = RLSettings(
        batch_size=8, samples_per_prompt=2, max_response=4, max_context=4, temperature=0.9
    )
    runner = rl_fakes.make_runner(settings, reward_fn=None)
    runner.reward_fn = lambda contexts, texts: np.array([len(t) for t in texts], np.float32)
    metrics = runner.step(rl_fakes.prompts(8), jax.random.PRNGKey(0))
    shares = [metrics[f"time_{p}_share"] for p in PARTS]
    assert all(0.0 <= s <= 1.0 for s in shares), shares
    # The four parts are timed back to back inside the step; the rest is host glue.
    assert 0.5 < sum(shares) <= 1.0 + 1e-6, shares
    assert metrics["loop_tokens_per_s"] > 0
    assert metrics["step_seconds"] >= metrics["time_rollout_seconds"]

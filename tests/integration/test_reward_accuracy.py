"""A multi-step `rlaif-jax reward` run (gin/test/reward_smoke.gin, 8 fake devices) on a
synthetic pair task: RMs on soft AI labels (p = 0.8 / 0.2) and on hard human labels both
rise from chance (0.5, a zero-initialised score head) to clearly above it on held-out pairs.
The toy world's preferences need more steps than a test can afford (see the demo)."""

import json

import numpy as np
import pytest

from tests.integration.test_sft_reward_smoke import _complete, _pairs, _run, _write_ai_labels


@pytest.mark.slow
def test_reward_models_beat_chance_on_held_out_pairs(tmp_path):
    sources = ["--gin.task_sources.sources=@synthetic_pair_sources()"]
    # The RMs start from SFT and read its input layout: short rows for the synthetic pairs.
    short = ["--gin.sft.max_context=16", "--gin.sft.max_response=16"]
    _run("sft", "test/sft_smoke.gin", tmp_path, *sources, *short)
    _write_ai_labels(tmp_path / "labels", _pairs("train", 512))
    steps = 16
    common = [
        *sources,
        "--gin.RM_BATCH=16",
        "--gin.RM_LR=3e-3",
        "--gin.make_optimizer.name='adamw'",
        "--gin.reward.max_eval_pairs=64",
        # reward_smoke.gin restates sft_smoke.gin's layout; restate the one SFT used here.
        "--gin.reward.max_context=16",
        "--gin.reward.max_response=16",
    ]
    for scope in ("rm_ai", "rm_human"):
        _run(
            "reward",
            "test/reward_smoke.gin",
            tmp_path,
            *common,
            f"--gin.{scope}/TrainSettings.num_steps={steps}",
            scope=scope,
        )
        m = _complete(tmp_path / scope)
        assert m["num_steps"] == steps and m["num_eval_pairs"] == 64
        rows = [
            json.loads(r)
            for r in (tmp_path / "logs" / scope / "metrics.jsonl").read_text().splitlines()
        ]
        first = np.mean([r["loss"] for r in rows[:5]])
        last = np.mean([r["loss"] for r in rows[-5:]])
        assert last < first, (scope, first, last)
        # Chance is 0.5; 64 held-out pairs put 0.75 well beyond noise (p < 1e-4).
        assert m["pairwise_accuracy"] >= 0.75, (scope, m)
        if scope == "rm_ai":  # soft labels 0.8/0.2: the loss floor is their entropy, not 0
            floor = -(0.8 * np.log(0.8) + 0.2 * np.log(0.2))
            assert m["loss"] > floor - 1e-3

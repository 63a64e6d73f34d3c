"""Checkpoint selection (paper §1.5) through the CLI on a tiny toy run: `rlaif-jax sft`,
then `rlaif-jax rl` (the gold arm of gin/experiments/toy_arms.gin: RL on the toy oracle,
no RM to train) with selection on, the AI judge being the tiny SFT model itself.

Checked: every step (validation_every = 1) was measured on the validation
prompts; the K best by validation reward were judged; the pick is the candidate with the
highest judged win rate (ties: validation reward, then the earlier step); the stage's
policy (rl_gold/ckpt, what evaluation reads) holds exactly that candidate's params; and
the report's section (as `evaluate` builds it) says which step was picked and why. Which candidate the tiny judge prefers
is not known in advance; the unit tests (tests/unit/rl/test_selection.py) pin a judge
that disagrees with the validation reward."""

import json

import jax
import numpy as np
import pytest

from rlaif_jax import cli, model_artifact
from rlaif_jax.evaluation import report
from rlaif_jax.rl import selection
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.train import checkpoint

FILES = ["--gin_file=experiments/toy_arms.gin", "--gin_file=test/toy_tiny.gin"]
SELECTION = [
    "--gin_bindings=import rlaif_jax.rl.selection",
    "--gin_bindings=rl.selection = @SelectionSettings()",
    "--gin.SelectionSettings.num_candidates=2",
    "--gin.SelectionSettings.validation_every=1",
    "--gin.SelectionSettings.num_validation_prompts=16",
    "--gin.SelectionSettings.num_judge_prompts=8",
    "--gin.SelectionSettings.decode_batch_size=8",
    "--gin.SelectionSettings.judge_model_dir='sft'",
    "--gin.RLSettings.max_steps=4",
]


def _params(directory, structs):
    return jax.device_get(checkpoint.restore_params(directory, structs))


@pytest.mark.slow
def test_rl_keeps_the_checkpoint_the_ai_judge_prefers(tmp_path):
    work = f"--workdir={tmp_path}"
    assert cli.main(["sft", *FILES, "--scope=sft", work]) == 0
    assert cli.main(["rl", *FILES, *SELECTION, "--scope=rl_gold", work]) == 0
    out = tmp_path / "rl_gold"
    record = json.loads((out / selection.SELECTION_FILE).read_text())
    assert [r["step"] for r in record["validation_history"]] == [1, 2, 3, 4]
    # 16 prompts x RLSettings.samples_per_prompt (2 in the toy world)
    assert all(r["n"] == 16 * 2 for r in record["validation_history"])
    rewards = {r["step"]: r["validation_reward"] for r in record["validation_history"]}
    best_two = sorted(rewards, key=lambda s: (-rewards[s], s))[:2]
    rows = record["candidates"]
    assert sorted(r["step"] for r in rows) == sorted(best_two)
    assert all(r["win_rate_vs_sft"]["n"] == 8 for r in rows)
    best = max(
        rows,
        key=lambda r: (r["win_rate_vs_sft"]["value"], r["validation_reward"], -r["step"]),
    )
    assert record["selected_step"] == best["step"] and record["final_step"] == 4
    assert [r["step"] for r in rows if r["selected"]] == [best["step"]]
    assert record["reason"].startswith(f"step {best['step']}: the highest AI-judged win rate")
    # The policy evaluation reads is that candidate, not the last step.
    art = model_artifact.open_model(str(out))
    mesh = mesh_lib.make_mesh()
    structs, _ = model_params.abstract_params(art.config, mesh, rules_lib.get_rules(), "lm")
    chosen = _params(str(out / "ckpt"), structs)
    kept = _params(str(out / "candidates" / f"step_{best['step']}"), structs)
    jax.tree.map(np.testing.assert_array_equal, chosen, kept)
    last = _params(str(out / selection.TRAIN_CKPT), structs)
    if best["step"] != 4:
        leaves = zip(jax.tree.leaves(chosen), jax.tree.leaves(last))
        assert any(not np.array_equal(a, b) for a, b in leaves)
    # The report (evaluate's metrics.json and report.md) says which step was picked and why.
    picked = report.checkpoint_selection(str(tmp_path), [("sft", "sft"), ("gold", "rl_gold")])
    assert list(picked) == ["gold"] and picked["gold"]["selected_step"] == best["step"]
    text = report.render_markdown({"checkpoint_selection": picked})
    assert f"| gold | {best['step']} (4) | {record['reason']} |" in text


def _validated_train(records, out_dir, stop_after=None):
    from rlaif_jax.rl import candidates, stage
    from rlaif_jax.rl.runner import RLSettings
    from tests.integration import rl_fakes

    settings = RLSettings(
        batch_size=8, samples_per_prompt=2, learning_rate=3e-3, max_response=6, max_context=4,
        num_epochs=2, checkpoint_every=100,
    )  # fmt: skip

    def reward_fn(contexts, responses):
        return np.array([r.count("f") / max(len(r), 1) for r in responses], np.float32)

    runner = rl_fakes.make_runner(settings, reward_fn)
    store = candidates.CandidateStore(out_dir, 1)
    sel = selection.SelectionSettings(num_candidates=1, validation_every=2)
    validation = selection.Validation(runner, store, rl_fakes.prompts(10), sel, seed=0)
    stage.train(runner, records, out_dir, stop_after=stop_after, validation=validation)
    return store


def test_a_resumed_run_remeasures_what_came_after_its_checkpoint(tmp_path):
    from tests.integration import rl_fakes

    records = rl_fakes.prompts(20)  # 4 steps; measured at 2 and 4 (the last)
    full = _validated_train(records, str(tmp_path / "full"))
    part = str(tmp_path / "part")
    killed = _validated_train(records, part, stop_after=3)  # checkpoint at step 3
    assert [r["step"] for r in killed.history] == [2]
    # A measurement of step 4 that its run did not checkpoint before dying: it must not
    # survive the resume (its high reward would make it the only candidate).
    killed.offer(4, 99.0, 1, {"w": np.zeros(2, np.float32)})
    resumed = _validated_train(records, part)
    assert resumed.history == full.history
    assert [r["step"] for r in full.history] == [2, 4]
    assert resumed.candidates == full.candidates
    rows = [json.loads(line) for line in open(f"{part}/metrics.jsonl")]
    assert [("validation_reward" in r) for r in rows] == [False, True, False, True]

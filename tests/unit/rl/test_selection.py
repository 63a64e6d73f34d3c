"""rl/selection.py and rl/candidates.py: checkpoint selection (paper §1.5).

The selection tests use stand-in policies (tiny param trees whose "decoding" is a
lookup) and stand-in judges, so the pick is known: validation reward ranks one
checkpoint first and the judge prefers another; selection must follow the judge."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.data import tasks
from rlaif_jax.evaluation import report
from rlaif_jax.rl import candidates, selection
from rlaif_jax.rl.runner import RLSettings
from rlaif_jax.train import checkpoint
from tests.integration import rl_fakes

PROMPTS = [{"id": f"p{i}", "context": f"post {i}"} for i in range(6)]


def _params(step):
    return {"w": jnp.full((3,), float(step), jnp.float32)}


def _store(tmp_path, rewards, k=2):
    store = candidates.CandidateStore(str(tmp_path), k)
    for step, reward in rewards:
        store.offer(step, reward, 12, _params(step))
    return store


def _judge_preferring(favourite_text):
    """P(a ≻ b): 0.9 when a is the favourite policy's text, else 0.2 (SFT wins)."""

    def judge(prompts, a, b):
        assert len(prompts) == len(a) == len(b)
        return np.array([0.9 if x == favourite_text else 0.2 for x in a])

    return judge


def _select(tmp_path, store, judge, k=1):
    def decode(params):  # a policy's response text names its step
        step = int(np.asarray(params["w"])[0])
        return [f"summary of step {step}"] * (len(PROMPTS) * k)

    return selection.select_checkpoint(
        str(tmp_path),
        store,
        PROMPTS,
        selection.SelectionSettings(num_candidates=store.k, validation_every=1),
        decode=decode,
        restore=lambda s: checkpoint.restore_params(store.step_dir(s), _params(0)),
        load_sft=lambda: _params(0),
        make_judge=lambda: judge,
        final_step=8,
        strip_trailing=False,
    )


@pytest.mark.parametrize("favourite", [4, 2])
def test_selection_picks_the_checkpoint_the_judge_prefers(tmp_path, favourite):
    # Validation reward ranks step 2 first, then 4; step 6 is not kept (K = 2).
    store = _store(tmp_path, [(2, 0.9), (4, 0.5), (6, 0.1)])
    assert store.candidates == [2, 4]
    record = _select(tmp_path, store, _judge_preferring(f"summary of step {favourite}"))
    assert record["selected_step"] == favourite
    # The stage's policy (what evaluation restores) is that checkpoint's params.
    picked = checkpoint.restore_params(str(tmp_path / "ckpt"), _params(0))
    np.testing.assert_array_equal(np.asarray(picked["w"]), np.full(3, favourite))
    on_disk = json.loads((tmp_path / selection.SELECTION_FILE).read_text())
    rows = {r["step"]: r for r in on_disk["candidates"]}
    assert sorted(rows) == [2, 4]
    assert rows[favourite]["selected"] and rows[favourite]["win_rate_vs_sft"]["value"] == 1.0
    other = 6 - favourite
    assert not rows[other]["selected"] and rows[other]["win_rate_vs_sft"]["value"] == 0.0
    assert rows[2]["validation_rank"] == 1 and rows[4]["validation_rank"] == 2
    assert rows[2]["win_rate_vs_sft"]["n"] == len(PROMPTS)
    assert on_disk["reason"].startswith(f"step {favourite}: the highest AI-judged win rate")
    if favourite == 4:  # the pick overrides the validation reward, and says so
        assert "step 2 had the highest validation reward" in on_disk["reason"]
    assert [r["step"] for r in on_disk["validation_history"]] == [2, 4, 6]
    assert on_disk["final_step"] == 8
    assert selection.read_selection(str(tmp_path))["selected_step"] == favourite


def test_ties_go_to_the_higher_validation_reward_then_the_earlier_step():
    def row(step, reward, win, rank):
        return {
            "step": step,
            "validation_reward": reward,
            "validation_rank": rank,
            "win_rate_vs_sft": {"value": win, "n": 4},
        }

    assert selection.choose([row(2, 0.5, 0.75, 2), row(4, 0.9, 0.75, 1)])[0] == 4
    assert selection.choose([row(6, 0.5, 0.75, 1), row(2, 0.5, 0.75, 1)])[0] == 2
    assert selection.choose([row(2, 0.9, float("nan"), 1), row(4, 0.1, 0.2, 2)])[0] == 4


def test_judged_win_rate_averages_each_prompts_samples():
    prompts = PROMPTS[:2]
    texts = {3: ["good", "bad", "good", "good"]}  # prompt 0: 1/2, prompt 1: 2/2
    rows = [{"step": 3, "validation_reward": 0.1}]
    judge = _judge_preferring("good")
    (out,) = selection.judge_candidates(rows, texts, ["sft"] * 4, judge, prompts, 2)
    assert out["win_rate_vs_sft"]["value"] == pytest.approx(0.75)
    assert out["win_rate_vs_sft"]["n"] == 2 and out["validation_rank"] == 1


def test_store_keeps_the_k_best_and_survives_reopening(tmp_path):
    store = _store(tmp_path, [(1, 0.2), (2, 0.4), (3, 0.3), (4, 0.1)], k=2)
    assert store.candidates == [2, 3] and store.evicted == [{"step": 1, "by": 3}]

    def names():
        return sorted(p.name for p in (tmp_path / "candidates").iterdir())

    # Step 1's params stay until a training checkpoint at step 3 (which evicted it).
    assert names() == ["index.json", "step_1", "step_2", "step_3"]
    (tmp_path / "candidates" / "step_9").mkdir()  # a save cut short by a crash
    again = candidates.CandidateStore(str(tmp_path), 2)
    assert again.candidates == [2, 3] and "step_9" not in names()
    assert [r["step"] for r in again.rows()] == [2, 3]
    assert again.reward(4) == pytest.approx(0.1) and math.isnan(again.reward(5))
    # A run resuming from step 2 forgets what it measured later (the replay remeasures)
    # and takes back step 1, which step 3's measurement had evicted.
    again.prepare(2)
    assert again.candidates == [1, 2] and again.measured(3) is None and not again.evicted
    assert names() == ["index.json", "step_1", "step_2"]
    assert again.offer(3, 0.3, 12, _params(3))  # the replay evicts step 1 again
    assert not again.offer(4, 0.1, 12, _params(4))
    again.release(2)  # a checkpoint before the eviction: step 1 must stay
    assert "step_1" in names()
    again.release(3)
    assert names() == ["index.json", "step_2", "step_3"] and not again.evicted
    assert candidates.CandidateStore(str(tmp_path), 2).evicted == []


def test_validation_reward_counts_every_prompt_once_and_is_repeatable():
    settings = RLSettings(batch_size=8, samples_per_prompt=2, max_response=4, max_context=8)
    runner = rl_fakes.make_runner(settings, lambda c, t: [0.0] * len(c))
    prompts = rl_fakes.prompts(11)  # a full batch of 8 and a padded one of 3
    runner.reward_fn = lambda contexts, texts: [float(len(c)) for c in contexts]
    mean, n = candidates.validation_reward(runner, runner.policy_params, prompts, seed=0)
    assert n == 22
    assert mean == pytest.approx(np.mean([len(p["context"]) for p in prompts]))
    runner.reward_fn = lambda contexts, texts: [float(len(t)) for t in texts]
    first = candidates.validation_reward(runner, runner.policy_params, prompts, seed=0)
    assert candidates.validation_reward(runner, runner.policy_params, prompts, seed=0) == first


def _sources(with_prompts):
    sft = [{"id": f"s{i}", "context": f"c{i}", "response": "r"} for i in range(5)]
    prompts = [{"id": f"v{i}", "context": f"v{i}"} for i in range(3)]
    out = {"sft": {"validation": tasks.RecordSource("s", "sft", lambda: sft)}, "prompts": {}}
    if with_prompts:
        out["prompts"]["validation"] = tasks.RecordSource("p", "prompts", lambda: prompts)
    return tasks.TaskSources("summarize", out)


def test_validation_prompts_come_from_the_prompts_role_else_sft():
    settings = selection.SelectionSettings(num_validation_prompts=4)
    assert [r["id"] for r in selection.validation_prompts(_sources(True), settings)] == [
        "v0",
        "v1",
        "v2",
    ]
    got = selection.validation_prompts(_sources(False), settings)
    assert got == [{"id": f"s{i}", "context": f"c{i}"} for i in range(4)]
    with pytest.raises(ValueError, match=r"SelectionSettings.split = 'test'"):
        selection.validation_prompts(_sources(True), selection.SelectionSettings(split="test"))


def test_settings_errors_name_the_binding():
    with pytest.raises(ValueError, match=r"SelectionSettings.num_candidates = 0"):
        selection.SelectionSettings(num_candidates=0)
    with pytest.raises(ValueError, match=r"SelectionSettings.judge_samples_per_prompt = 2"):
        selection.SelectionSettings(judge_samples_per_prompt=2)


def test_report_says_which_checkpoint_was_picked_and_why(tmp_path):
    store = _store(tmp_path / "rl_rlaif", [(2, 0.9), (4, 0.5)])
    _select(tmp_path / "rl_rlaif", store, _judge_preferring("summary of step 4"))
    policies = [("sft", "sft"), ("rlaif", "rl_rlaif"), ("rlhf", "rl_rlhf")]
    picked = report.checkpoint_selection(str(tmp_path), policies)
    assert list(picked) == ["rlaif"] and picked["rlaif"]["selected_step"] == 4
    text = report.render_markdown({"checkpoint_selection": picked})
    section = text[text.index("## Checkpoint selection") :]
    assert "| rlaif | 4 (8) | step 4: the highest AI-judged win rate" in section
    assert "step 2 had the highest validation reward" in section
    assert "| rlaif | 4 | 0.5 (2) | 100.0%" in section and "| yes |" in section
    assert "Checkpoint selection" not in report.render_markdown({})

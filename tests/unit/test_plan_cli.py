"""`rlaif-jax plan` over a pipeline file (issue 21.1): every step of pipeline.steps
planned in its gin scope (the toy demo at test size: sft, sample_pairs,
bootstrap_labeler, label, two reward models, two RL runs, evaluate), one table per step,
nothing written to the work directory (the evaluate step plans the RL policies, whose
descriptions the RL steps write in the scratch directory); over a small capacity it exits 2 naming each
step, stage and role, and a stage run the user's way refuses before loading anything."""

from __future__ import annotations

import os

import pytest

from rlaif_jax import cli


def _plan_cli(*extra: str) -> int:
    return cli.main(
        ["plan", "--gin_file=experiments/demo.gin", "--gin_file=test/toy_tiny.gin", *extra]
    )


STEPS = ("sft", "policy_pairs", "labeler", "labels", "rm_ai", "rm_human", "rl_rlaif",
         "rl_rlhf", "report")  # fmt: skip


def test_rlaif_jax_plan_over_a_pipeline_prints_every_step(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert _plan_cli(f"--workdir={workdir}") == 0
    out = capsys.readouterr().out
    for output in STEPS:
        assert f"## step {output} (" in out, output
    assert out.count("Memory plan: ") == len(STEPS)
    for row in ("| trainee | 0-7 |", "| labeler (float32) | 0-7 |", "| policy | 0-7 |",
                "| policy sft (float32, one at a time) | 0-7 |", "| decode sft |"):  # fmt: skip
        assert row in out, row
    assert "Every planned step fits (9 steps)." in out
    # The RL steps describe their policies (model.json, no weights) before their plans
    # return, so the evaluate step plans the RL policies too, with no note left.
    report = out[out.index("## step report (") :]
    for policy in ("sft", "rlaif", "rlhf"):
        assert f"| policy {policy} (float32, one at a time) | 0-7 |" in report, policy
    assert "no model artifact yet" not in report
    assert not os.path.exists(workdir / "sft")  # planned in a scratch directory


def test_a_stage_over_capacity_refuses_naming_stage_and_role(tmp_path, capsys):
    tight = ("--gin.MemoryPlanSettings.capacity_gb=1e-5", "--gin.MemoryPlanSettings.compile=False")
    assert _plan_cli(*tight) == 2
    err = capsys.readouterr().err
    assert "step sft (sft, gin scope sft): The sft stage does not fit" in err
    assert "step labels (label, gin scope label): The label stage does not fit" in err
    assert "(roles labeler;" in err and "(roles trainee;" in err
    assert "step rm_ai (reward, gin scope rm_ai): The reward[rm_ai] stage" in err
    # The sft stage itself (the user path): refused before anything is loaded.
    workdir = tmp_path / "sft_run"
    rc = cli.main(["sft", "--gin_file=test/sft_smoke.gin", f"--workdir={workdir}", *tight])
    assert rc == 2
    err = capsys.readouterr().err
    assert "The sft stage does not fit" in err and "roles trainee" in err
    assert "What to change" in err and "TrainSettings.microbatches" in err
    assert not os.path.exists(workdir / "sft" / "ckpt")


def test_a_lora_pipeline_plans_the_rl_steps_as_adapters(tmp_path, capsys):
    """gin/method/lora.gin: the RL steps' plans (the stage's own path) hold adapters with
    their optimizer state only and the SFT params once, as the anchor."""
    assert _plan_cli("--gin_file=method/lora.gin", f"--workdir={tmp_path / 'run'}") == 0
    out = capsys.readouterr().out
    for step in ("rl_rlaif", "rl_rlhf"):
        table = out[out.index(f"## step {step} (") :].split("## step ")[1]
        row = next(line for line in table.splitlines() if line.startswith("| policy (LoRA"))
        params, opt = (float(x) for x in row.split("|")[3:5])
        anchor = next(line for line in table.splitlines() if line.startswith("| anchor ("))
        assert "the frozen base of policy and value" in anchor, step
        assert opt == pytest.approx(2 * params, rel=0.05), step  # Adam over the adapters
        assert params < float(anchor.split("|")[3]) / 2, step


def test_split_roles_plans_value_and_anchor_on_their_devices(tmp_path, capsys):
    """gin/placement/split_roles.gin: each RL step plans the policy on 0-3 and the value
    (params, optimizer state, score pass, update), the anchor and the reward model on 4-7."""
    assert _plan_cli("--gin_file=placement/split_roles.gin", f"--workdir={tmp_path}") == 0
    out = capsys.readouterr().out
    for step in ("rl_rlaif", "rl_rlhf"):
        table = out[out.index(f"## step {step} (") :].split("## step ")[1]
        for row in ("| policy | 0-3 |", "| value (in host memory between its phases) | 4-7 |",
                    "| anchor (bfloat16, in host memory between its phases) | 4-7 |",
                    "| reward (bfloat16) | 4-7 |",
                    "| value update | value | 4-7 |",
                    "| value + anchor score | value, anchor | 4-7 |", "| update | policy | 0-3 |",
                    "| 0-3 | policy |", "| 4-7 | reward"):  # fmt: skip
            assert row in table, (step, row)

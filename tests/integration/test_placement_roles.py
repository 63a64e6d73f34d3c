"""Every RL role on a placement of its own, the way a user runs it (issue 21.2 / 21.4).

d-RLAIF with the tiny SFT model of `test_placement` as its labeler: one RL step run
colocated from Python (every role on the 8 fake devices) equals the same step run by
`rlaif-jax rl` with gin/placement/split_roles.gin (the policy on devices 0-3; the value
model, the anchor and the labeler on 4-7, each with its own mesh and rules, the anchor
and the labeler offloaded to host memory between their passes): the same rewards, KL,
losses and trained policy. Every binding the gin file makes configures the stage.
"""

from __future__ import annotations

import functools
import json

import gin
import jax
import numpy as np

from rlaif_jax import cli, gin_utils, model_artifact
from rlaif_jax.labeling import render
from rlaif_jax.rl import roles, stage
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules
from tests.integration.test_placement import NO_PLAN, PROMPTS, SETTINGS, workdir  # noqa: F401

PROMPT = dict(
    task="rate",
    preamble_text="Rate the summary from 1 to 10.",
    sample_format="Text: {context}\nSummary: {response}",
    ending="SCORE: ",
)
KEYS = ("reward_mean", "reward_std", "kl", "loss", "policy_loss", "value_loss", "entropy")


def _params(model_dir):
    art = model_artifact.open_model(model_dir)
    return jax.device_get(model_artifact.load_params(art, make_mesh(data=-1), get_rules("dp"))[0])


def _colocated(root):
    gin.bind_parameter("labeler_from_checkpoint.model_dir", "sft")
    gin.bind_parameter("labeler_from_checkpoint.batch_size", 8)
    builder = functools.partial(
        roles.direct_labeler_from_checkpoint, prompt=render.DirectPrompt(**PROMPT)
    )
    summary = stage.run_stage(
        workdir=root,
        name="drlaif_colocated",
        reward_builder=builder,
        settings=SETTINGS,
        prompts=PROMPTS,
        mesh=make_mesh(data=1, fsdp=-1),
        rules=get_rules("fsdp"),
        memory_plan=NO_PLAN,
    )
    gin.clear_config()
    return summary, _params(f"{root}/rl_drlaif_colocated")


def _cli_placed(root):
    s = SETTINGS
    bindings = {
        "rl.name": "'drlaif_placed'",
        "rl.prompts": repr(PROMPTS),
        "RLSettings.batch_size": s.batch_size,
        "RLSettings.max_steps": s.max_steps,
        "RLSettings.num_epochs": s.num_epochs,
        "RLSettings.optimizer": f"'{s.optimizer}'",
        "RLSettings.learning_rate": s.learning_rate,
        "RLSettings.checkpoint_every": s.checkpoint_every,
        "RLSettings.tensorboard": False,
        "labeler_from_checkpoint.model_dir": "'sft'",
        "labeler_from_checkpoint.batch_size": 8,
        "direct_labeler_from_checkpoint.prompt": "@direct_prompt()",
        **{f"direct_prompt.{k}": repr(v) for k, v in PROMPT.items()},
        # float32 frozen roles, to compare with the colocated float32 run.
        "anchor/RolePlacement.param_dtype": "'float32'",
        "reward/RolePlacement.param_dtype": "'float32'",
        "MemoryPlanSettings.enabled": False,
    }
    args = [
        "rl",
        "--gin_file=runs/rl.gin",
        "--gin_file=method/d_rlaif.gin",
        "--gin_file=sharding/fsdp.gin",
        "--gin_file=placement/split_roles.gin",
        f"--workdir={root}",
        *(f"--gin.{k}={v}" for k, v in bindings.items()),
    ]
    assert cli.main(args) == 0
    unused = gin_utils.unused_bindings()
    with open(f"{root}/rl_drlaif_placed/metrics.jsonl") as f:
        last = [json.loads(line) for line in f][-1]
    return last, _params(f"{root}/rl_drlaif_placed"), unused


def test_split_roles_gin_with_the_labeler_apart_gives_the_colocated_step(workdir):  # noqa: F811
    colocated, p_col = _colocated(workdir)
    placed, p_placed, unused = _cli_placed(workdir)
    # Every binding of split_roles.gin configured the stage; runs/rl.gin's RM batch is
    # for RLAIF / RLHF (this is d-RLAIF).
    assert unused == ["rlaif_jax.rl.roles.reward_model_from_checkpoint.batch_size"]
    for key in KEYS:
        np.testing.assert_allclose(placed[key], colocated[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert colocated["reward_std"] > 0  # the labeler's rewards vary: it was read
    for a, b in zip(jax.tree.leaves(p_col), jax.tree.leaves(p_placed), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # The step moved the policy: equal params are not the SFT params twice.
    sft = _params(f"{workdir}/sft")
    moved = [
        np.abs(np.asarray(a) - b).max()
        for a, b in zip(jax.tree.leaves(p_col), jax.tree.leaves(sft))
    ]
    assert max(moved) > 1e-4

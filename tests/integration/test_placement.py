"""Per-role placement in the RL stage (issue 21.2) and its memory plan's refusal (21.1).

A tiny SFT policy and reward model are written as model artifacts; one RL step runs
colocated (every role on all 8 fake devices) and placed (policy, value and anchor on
devices 0-3, the reward model on 4-7 with its own rules); the steps agree. A plan over a
capacity set by gin refuses the run before anything is loaded, naming the roles, and
`rlaif-jax plan` prints the table or refuses the same way.
"""

from __future__ import annotations

import functools
import os

import gin
import jax
import numpy as np
import pytest

from rlaif_jax import cli, gin_utils, model_artifact
from rlaif_jax.data import vocab as vocab_lib
from rlaif_jax.data.layout import InputLayout
from rlaif_jax.models.config import get_config
from rlaif_jax.rl import roles, stage
from rlaif_jax.rl.runner import RLSettings
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.memory import MemoryPlanError, MemoryPlanSettings
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.placement import RolePlacement
from rlaif_jax.sharding.rules import get_rules
from rlaif_jax.train.checkpoint import save_params

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "Preferred Summary=1"] * 20
LAYOUT = InputLayout(prompt_suffix=" TL;DR:", max_context=16, max_response=6)
SETTINGS = RLSettings(
    batch_size=8,
    max_steps=1,
    num_epochs=1,
    # SGD: the update is linear in the gradient (Adam's first step, g / (|g| + eps), turns
    # a reduction-order difference in a near-zero gradient into a whole step).
    optimizer="sgd",
    learning_rate=1.0,
    checkpoint_every=100,
    tensorboard=False,
)
PROMPTS = [{"id": str(i), "context": TEXTS[i % 3] + f" {i}"} for i in range(8)]
NO_PLAN = MemoryPlanSettings(enabled=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    vocab = vocab_lib.sentencepiece_vocabulary(
        vocab_lib.train_sentencepiece(TEXTS, str(root / "spm"), 64)
    )
    config = get_config("tiny")
    mesh, rules = make_mesh(data=1, fsdp=-1), get_rules("fsdp")
    for name, head, seed in (("sft", "lm", 1), ("rm_ai", "scalar", 2)):
        params, _ = model_params.init_params(config, jax.random.PRNGKey(seed), mesh, rules, head)
        # A fresh scalar head is zero: perturb every leaf so the RM's rewards vary.
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
        noisy = [x + 0.2 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
        params = jax.tree.unflatten(treedef, noisy)
        d = root / name
        model_artifact.write_model_artifact(str(d), config, head, vocab, LAYOUT)
        save_params(str(d / "ckpt"), params)
    return str(root)


REWARD = functools.partial(roles.reward_model_from_checkpoint, rm_dir="rm_ai", batch_size=8)


def _run(workdir, name, placements=None, memory_plan=NO_PLAN):
    summary = stage.run_stage(
        workdir=workdir,
        name=name,
        reward_builder=REWARD,
        settings=SETTINGS,
        prompts=PROMPTS,
        mesh=make_mesh(data=1, fsdp=-1),
        rules=get_rules("fsdp"),
        placements=placements,
        memory_plan=memory_plan,
    )
    art = model_artifact.open_model(f"{workdir}/rl_{name}")
    params, _ = model_artifact.load_params(art, make_mesh(data=-1), get_rules("dp"))
    return summary, jax.device_get(params)


def test_policy_on_four_devices_and_reward_on_the_other_four_equals_colocated(workdir):
    colocated, p_col = _run(workdir, "colocated")
    placements = {
        "policy": RolePlacement(devices=(0, 4), fsdp=-1, data=1, rules="fsdp"),
        "anchor": RolePlacement(rules="dp", param_dtype="float32"),
        # f32 to compare with the colocated f32 RM; offload: host memory between calls.
        "reward": RolePlacement(
            devices=(4, 8), data=-1, rules="dp", param_dtype="float32", offload=True
        ),
    }
    placed, p_placed = _run(workdir, "placed", placements)
    for key in ("reward_mean", "reward_std", "kl", "loss", "value_loss", "entropy"):
        np.testing.assert_allclose(placed[key], colocated[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert colocated["reward_std"] > 0  # the rewards are not constant: the RM was read
    for a, b in zip(jax.tree.leaves(p_col), jax.tree.leaves(p_placed), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # The step moved the policy: equal params are not just the SFT params twice.
    sft = model_artifact.load_params(
        model_artifact.open_model(f"{workdir}/sft"), make_mesh(data=-1), get_rules("dp")
    )[0]
    moved = [
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(jax.tree.leaves(p_col), jax.tree.leaves(jax.device_get(sft)))
    ]
    assert max(moved) > 1e-4


def test_plan_refuses_before_loading_and_names_the_roles(workdir):
    tight = MemoryPlanSettings(capacity_gb=1e-4, compile=False)
    with pytest.raises(
        MemoryPlanError, match=r"devices 0-7 need .* \(roles policy, value, anchor, reward"
    ):
        _run(workdir, "refused", memory_plan=tight)
    assert not os.path.exists(f"{workdir}/rl_refused/model.json")  # nothing was loaded
    placements = {"reward": RolePlacement(devices=(4, 8))}
    with pytest.raises(MemoryPlanError, match=r"roles policy, value, anchor;") as e:
        _run(workdir, "refused", placements, memory_plan=tight)
    assert "What to change" in str(e.value) and "microbatches" in str(e.value)


def _cli(workdir, *extra):
    return cli.main(
        [
            "plan",
            "--gin_file=runs/rl.gin",
            "--gin_file=method/rlaif.gin",
            "--gin_file=sharding/fsdp.gin",
            f"--workdir={workdir}",
            "--gin.RLSettings.batch_size=8",
            "--gin.reward_model_from_checkpoint.batch_size=8",
            "--gin.rl.prompts=[]",
            "--gin.MemoryPlanSettings.compile=False",
            *extra,
        ]
    )


def test_rlaif_jax_plan_prints_the_table_or_refuses(workdir, capsys):
    assert _cli(workdir) == 0
    out = capsys.readouterr().out
    assert "| policy |" in out and "| reward (float32) |" in out and "Fits." in out
    assert _cli(workdir, "--gin_file=memory/capacity.gin", "--gin.CAPACITY_GB=1e-4") == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "roles policy, value, anchor, reward" in err


def test_plan_of_the_placement_and_memory_gin_files(workdir, capsys):
    assert _cli(workdir, "--gin_file=placement/split_reward.gin") == 0
    out = capsys.readouterr().out
    assert "| policy | 0-3 |" in out and "| reward (bfloat16) | 4-7 |" in out
    assert gin_utils.unused_bindings() == []
    gin.clear_config()
    args = ("--gin_file=memory/frozen_bf16.gin", "--gin_file=placement/remat.gin")
    assert _cli(workdir, *args) == 0
    out = capsys.readouterr().out
    assert "| anchor (bfloat16) | 0-7 |" in out and "| reward (bfloat16) | 0-7 |" in out
    unused = gin_utils.unused_bindings()
    # The labeler's dtype is for the label stage and d-RLAIF; this is RLAIF.
    assert [u.split(".")[-2:] for u in unused] == [["labeler_from_checkpoint", "param_dtype"]]

"""The model roles of RL: policy, value, anchor (frozen SFT) and reward (RM or labeler).

- policy: a copy of the SFT params (trained).
- value: a scalar head on a copy of the SFT trunk (`model.lm_to_scalar_params`; trained).
- anchor: the loaded SFT params themselves (no copy when kept in float32; cast to bf16
  when `anchor_dtype='bfloat16'`), never given optimizer state.
- reward: a scalar-head RM checkpoint with its own vocabulary (RLAIF / RLHF differ only
  in which checkpoint), or the d-RLAIF labeler.

Every tree is laid out with the same rules table on the same mesh; the policy and value
copies are made by one jitted function with explicit out_shardings, so no tree is
duplicated beyond the three the algorithm needs (policy, value, anchor).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import gin
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rlaif_jax.rl import rewards
from rlaif_jax.sharding import partition
from rlaif_jax.sharding.rules import Rules

PyTree = Any

ANCHOR_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class PolicyRoles:
    """Policy/value (trainable, `params = {"policy", "value"}`) and the frozen anchor."""

    config: Any
    policy_model: Any
    value_model: Any
    params: PyTree
    param_shardings: PyTree
    anchor: PyTree
    anchor_shardings: PyTree


def _init(config: Any, mesh: Mesh, rules: Rules, head: str, seed: int = 0):
    from rlaif_jax.models import model as model_lib

    out = model_lib.init_params(config, jax.random.PRNGKey(seed), mesh, rules, head=head)
    if isinstance(out, tuple):
        return out
    return out, jax.tree.map(lambda x: x.sharding, out)


def build_roles(
    config: Any,
    sft_params: PyTree,
    mesh: Mesh,
    rules: Rules,
    anchor_dtype: str = "float32",
    seed: int = 0,
) -> PolicyRoles:
    """Policy, value and anchor from SFT params already placed on `mesh`.

    The value head is freshly initialised (seed) on the SFT trunk. `sft_params` becomes
    the anchor (cast when `anchor_dtype` is bfloat16), so do not reuse it elsewhere.
    """
    from rlaif_jax.models import model as model_lib
    from rlaif_jax.models import transformer

    if anchor_dtype not in ANCHOR_DTYPES:
        raise ValueError(
            f"anchor_dtype={anchor_dtype!r} (gin: RLSettings.anchor_dtype) must be one of "
            f"{sorted(ANCHOR_DTYPES)}."
        )
    lm_shardings = jax.tree.map(lambda x: x.sharding, sft_params)
    scalar_init, scalar_shardings = _init(config, mesh, rules, "scalar", seed)
    param_shardings = {"policy": lm_shardings, "value": scalar_shardings}

    def copies(sft, scalar):
        # jit outputs are fresh buffers: the donated train state never aliases the anchor.
        return {"policy": sft, "value": model_lib.lm_to_scalar_params(sft, scalar)}

    with partition.sharding_context(mesh, rules):
        params = jax.jit(copies, out_shardings=param_shardings)(sft_params, scalar_init)
    del scalar_init
    dtype = ANCHOR_DTYPES[anchor_dtype]
    anchor = sft_params
    if dtype != jnp.float32:
        with partition.sharding_context(mesh, rules):
            anchor = jax.jit(
                lambda p: jax.tree.map(lambda x: x.astype(dtype), p),
                out_shardings=lm_shardings,
                donate_argnums=0,
            )(sft_params)
    return PolicyRoles(
        config=config,
        policy_model=transformer.Transformer(config, head="lm"),
        value_model=transformer.Transformer(config, head="scalar"),
        params=params,
        param_shardings=param_shardings,
        anchor=anchor,
        anchor_shardings=lm_shardings,
    )


def _restore_params(ckpt_dir: str, target: PyTree) -> PyTree:
    """Params-only restore of another stage's checkpoint into `target`'s shapes/shardings."""
    from rlaif_jax.train import checkpoint

    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(
            f"No checkpoint directory {ckpt_dir}: run the stage that writes it first."
        )
    return checkpoint.restore_params(ckpt_dir, target)


@gin.configurable
def reward_model_from_checkpoint(
    workdir: str,
    mesh: Mesh,
    rules: Rules,
    rm_dir: str = gin.REQUIRED,
    vocab_path: str | None = None,
    model_preset: str = "toy_policy",
    model_overrides: dict | None = None,
    max_context: int = 512,
    max_response: int = 64,
    suffix: str = "",
    batch_size: int = 32,
) -> rewards.RewardModelReward:
    """RewardFn of the RM in WORKDIR/<rm_dir>/ckpt (scalar head) with its own vocabulary.

    rm_dir: 'rm_ai' (RLAIF) or 'rm_human' (RLHF). vocab_path defaults to
    WORKDIR/<rm_dir>/spm.model, else WORKDIR/sft/spm.model (the toy RM shares the SFT
    vocabulary because it starts from the SFT model). max_context / max_response /
    suffix must match the RM stage's layout.
    """
    from rlaif_jax.data import vocab as vocab_lib
    from rlaif_jax.models import config as model_config

    config = model_config.get_config(model_preset, **(model_overrides or {}))
    init, shardings = _init(config, mesh, rules, "scalar")
    params = _restore_params(os.path.join(workdir, rm_dir, "ckpt"), init)
    vocab = vocab_lib.sentencepiece_vocabulary(_vocab_path(workdir, rm_dir, vocab_path))
    return rewards.RewardModelReward(
        score_fn=rewards.make_rm_score_fn(config, mesh, rules, shardings),
        params=params,
        vocab=vocab,
        mesh=mesh,
        max_context=max_context,
        max_response=max_response,
        suffix=suffix,
        batch_size=batch_size,
    )


@gin.configurable
def direct_labeler_from_checkpoint(
    workdir: str, mesh: Mesh, rules: Rules, prompt: Any = None
) -> rewards.DirectLabelerReward:
    """d-RLAIF RewardFn: the labeler of `labeling.scoring.labeler_from_checkpoint` (gin
    configures its checkpoint, vocab and batch) scoring 1–10 with `direct.DirectScorer`."""
    from rlaif_jax.labeling import direct, render
    from rlaif_jax.labeling.scoring import labeler_from_checkpoint

    del mesh, rules  # the labeler lays itself out on this host's devices
    scorer, vocab = labeler_from_checkpoint(workdir)
    return rewards.DirectLabelerReward(
        direct.DirectScorer(scorer, vocab, prompt or render.DirectPrompt())
    )


def _vocab_path(workdir: str, stage_dir: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    own = os.path.join(workdir, stage_dir, "spm.model")
    return own if os.path.exists(own) else os.path.join(workdir, "sft", "spm.model")


@gin.configurable
def toy_oracle_reward(workdir: str, mesh: Mesh, rules: Rules) -> rewards.ToyOracleReward:
    """Reward builder of the gold-reward arm (`rewards.ToyOracleReward`); toy world only."""
    del workdir, mesh, rules
    return rewards.ToyOracleReward()

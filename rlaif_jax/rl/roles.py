"""The model roles of RL: policy, value, anchor (frozen SFT) and reward (RM or labeler).

- policy: a copy of the SFT params (trained).
- value: a scalar head on a copy of the SFT trunk (`model.lm_to_scalar_params`; trained).
- anchor: the loaded SFT params themselves (no copy when kept in float32; cast to bf16
  when `anchor_dtype='bfloat16'`), never given optimizer state.
- reward: a scalar-head RM checkpoint with its own vocabulary (RLAIF / RLHF differ only
  in which checkpoint), or the d-RLAIF labeler.

`build_roles` lays every tree out with the same rules table on the same mesh (the policy
and value copies are made by one jitted function with explicit out_shardings, so no tree
is duplicated beyond the three the algorithm needs: policy, value, anchor);
`rl.placement.place_roles` then moves the value and the anchor to their own placements
(`value_side` / `anchor_side`). With LoRA
(`lora`) policy and value are adapters on the anchor itself (no copy), and with
`value_on_policy_trunk` the value is a head on the policy's trunk
(`rl.policy_value` lists the four layouts).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gin
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rlaif_jax import model_artifact
from rlaif_jax.labeling import direct, render
from rlaif_jax.labeling.scoring import labeler_from_checkpoint
from rlaif_jax.rl import rewards
from rlaif_jax.sharding import memory, partition
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
    lora: Any = None  # models.lora.LoRAConfig: params are adapters on the anchor
    value_on_policy_trunk: bool = False  # params["value"] is a head on the policy trunk
    # Where the value model and the anchor run when not on the learner's devices (objects
    # with .mesh / .rules, `rl.placement.place_roles`; None = the learner's).
    value_side: Any = None
    anchor_side: Any = None
    offload_anchor: bool = False  # the anchor waits in host memory between score passes
    offload_value: bool = False  # value params + optimizer state on the host while sampling


def _init(config: Any, mesh: Mesh, rules: Rules, head: str, seed: int = 0):
    from rlaif_jax.sharding import model_params

    out = model_params.init_params(config, jax.random.PRNGKey(seed), mesh, rules, head=head)
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
    lora: Any = None,
    value_on_policy_trunk: bool = False,
) -> PolicyRoles:
    """Policy, value and anchor from SFT params already placed on `mesh`.

    The value head is freshly initialised (seed) on the SFT trunk. `sft_params` becomes
    the anchor (cast when `anchor_dtype` is bfloat16), so do not reuse it elsewhere.
    lora (a `models.lora.LoRAConfig`): policy and value are fresh adapters (b = 0) on
    the anchor, which is then also their frozen base. value_on_policy_trunk: the value
    is a scalar head on the policy's trunk (one forward pass gives both).
    """
    from rlaif_jax.models import transformer

    if anchor_dtype not in ANCHOR_DTYPES:
        raise ValueError(
            f"anchor_dtype={anchor_dtype!r} (gin: RLSettings.anchor_dtype) must be one of "
            f"{sorted(ANCHOR_DTYPES)}."
        )
    lm_shardings = jax.tree.map(lambda x: x.sharding, sft_params)
    if lora is not None or value_on_policy_trunk:
        from rlaif_jax.rl import policy_value

        params, param_shardings = policy_value.init_trainable(
            config, sft_params, mesh, rules, lora, value_on_policy_trunk, seed
        )
    else:
        params, param_shardings = _full_copies(config, sft_params, lm_shardings, mesh, rules, seed)
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
        lora=lora,
        value_on_policy_trunk=value_on_policy_trunk,
    )


def _full_copies(config, sft_params, lm_shardings, mesh, rules, seed):
    """{"policy": a copy of the SFT tree, "value": its trunk under a fresh scalar head}
    and their shardings."""
    from rlaif_jax.models import model as model_lib

    scalar_init, scalar_shardings = _init(config, mesh, rules, "scalar", seed)
    param_shardings = {"policy": lm_shardings, "value": scalar_shardings}

    def copies(sft, scalar):
        # jit outputs are fresh buffers: the donated train state never aliases the anchor.
        return {"policy": sft, "value": model_lib.lm_to_scalar_params(sft, scalar)}

    with partition.sharding_context(mesh, rules):
        params = jax.jit(copies, out_shardings=param_shardings)(sft_params, scalar_init)
    return params, param_shardings


@gin.configurable
def reward_model_from_checkpoint(
    workdir: str,
    mesh: Mesh,
    rules: Rules,
    task: str | None = None,
    rm_dir: str | None = None,
    model_overrides: dict | None = None,
    max_context: int | None = None,
    max_response: int | None = None,
    prompt_suffix: str | None = None,
    batch_size: int = 32,
    param_dtype: str | None = None,
    spec_only: bool = False,
) -> rewards.RewardModelReward:
    """RewardFn of the reward model in WORKDIR/<rm_dir> (or a path): its config, tokenizer
    and input layout come from its artifact, so it scores responses laid out exactly as
    in RM training. rm_dir: 'rm_ai' (RLAIF) or 'rm_human' (RLHF). max_context /
    max_response / prompt_suffix may only restate the artifact's layout (None = take it). task:
    unused (the RM's artifact holds its layout); the `rl.reward_builder` contract.
    param_dtype: storage of the RM's params (None = the artifact's; the stage passes its
    placement's). spec_only: return the `memory.ScoringRoleSpec` the memory plan needs
    (its config and batch), loading nothing."""
    del task
    if rm_dir is None:
        raise ValueError(
            "reward_model_from_checkpoint.rm_dir is not set: the reward model's directory "
            "under WORKDIR ('rm_ai' for RLAIF, 'rm_human' for RLHF) or a path."
        )
    art = model_artifact.open_model(
        model_artifact.resolve_model_dir(workdir, rm_dir, "reward_model_from_checkpoint.rm_dir")
    )
    if art.head != "scalar":
        raise model_artifact.ArtifactError(
            f"reward_model_from_checkpoint.rm_dir = {rm_dir!r}: {art.where} is an LM, not a "
            "reward model (head 'scalar'); point it at a `rlaif-jax reward` output."
        )
    if param_dtype is not None:
        model_overrides = {**(model_overrides or {}), "param_dtype": param_dtype}
    config = art.config_with(model_overrides, "reward_model_from_checkpoint.model_overrides")
    layout = art.layout_for(
        None,
        "reward_model_from_checkpoint",
        max_context=max_context,
        max_response=max_response,
        prompt_suffix=prompt_suffix,
    )
    if spec_only:
        length = layout.max_context + layout.max_response
        return memory.ScoringRoleSpec("reward", config, "scalar", batch_size, length)
    params, shardings = model_artifact.load_params(art, mesh, rules, "scalar", config)
    return rewards.RewardModelReward(
        score_fn=rewards.make_rm_score_fn(config, mesh, rules, shardings),
        params=params,
        vocab=art.vocab,
        mesh=mesh,
        max_context=layout.max_context,
        max_response=layout.max_response,
        prompt_suffix=layout.prompt_suffix,
        batch_size=batch_size,
        add_bos=layout.add_bos,
        context_template=layout.context_template,
    )


@gin.configurable
def direct_labeler_from_checkpoint(
    workdir: str,
    mesh: Mesh,
    rules: Rules,
    task: str | None = None,
    prompt: Any = None,
    param_dtype: str | None = None,
    spec_only: bool = False,
) -> rewards.DirectLabelerReward:
    """d-RLAIF RewardFn: the labeler of `labeling.scoring.labeler_from_checkpoint` (gin
    configures its model directory and batch) on this host's part of `mesh`, scoring 1–10
    with `direct.DirectScorer`, with the d-RLAIF prompt of `task` unless `prompt` is given.
    param_dtype / spec_only: as in `reward_model_from_checkpoint` (the spec's role is
    'labeler')."""
    if prompt is None and task is None:
        raise ValueError(
            "direct_labeler_from_checkpoint: no task to take the d-RLAIF prompt from; give "
            "the RL stage its task's data or set direct_labeler_from_checkpoint.prompt."
        )
    # Passed only when set: an explicit None would hide labeler_from_checkpoint's binding.
    dtype = {"param_dtype": param_dtype} if param_dtype is not None else {}
    if spec_only:
        config, batch_size, max_len = labeler_from_checkpoint(
            workdir, mesh, rules, spec_only=True, **dtype
        )
        return memory.ScoringRoleSpec("labeler", config, "lm", batch_size, max_len)
    scorer, vocab = labeler_from_checkpoint(workdir, mesh, rules, **dtype)
    prompt = prompt or render.direct_prompt_for(task)
    return rewards.DirectLabelerReward(direct.DirectScorer(scorer, vocab, prompt))

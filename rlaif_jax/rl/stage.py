"""`rlaif-jax rl`: A2C with KL to the SFT anchor (paper §1.5), reward from an RM or d-RLAIF.

Steps (`runner.RLRunner.step`) run for `num_epochs` over the RL prompts (or `max_steps`).
Checkpoints hold the learner state (policy, value, optimizer, reward statistics), the
data position and the step, so a restart resumes exactly (the step RNG is
fold_in(seed, step)).

Outputs: WORKDIR/rl_<name>/ckpt (checkpoints), WORKDIR/rl_<name>/metrics.jsonl (one
row per step: reward mean/std, KL, entropy, response length, value loss, explained
variance, EOS fraction, rollout and update tokens/s), WORKDIR/rl_<name>/COMPLETE.
With checkpoint selection (`rl.selection`, paper §1.5, `selection.py`): training
checkpoints in rl_<name>/train_ckpt, the K best policies by validation reward in
rl_<name>/candidates/, the AI judge's pick in rl_<name>/ckpt and rl_<name>/selection.json
(which step and why), and a validation_reward column in metrics.jsonl.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
from jax.sharding import Mesh

from rlaif_jax import artifacts, model_artifact
from rlaif_jax.data import batching, tasks
from rlaif_jax.data.vocab import stop_ids
from rlaif_jax.decoding import buckets, sample
from rlaif_jax.models.lora import LoRAConfig
from rlaif_jax.rl import placement as rl_placement
from rlaif_jax.rl import policy_value, rewards
from rlaif_jax.rl import roles as roles_lib
from rlaif_jax.rl import selection as selection_lib
from rlaif_jax.rl.candidates import CandidateStore
from rlaif_jax.rl.runner import RLRunner, RLSettings
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding.memory import MemoryPlanSettings
from rlaif_jax.sharding.placement import RolePlacement
from rlaif_jax.sharding.rules import Rules
from rlaif_jax.train import loop

logger = logging.getLogger("rlaif_jax.rl")


def train(
    runner: RLRunner,
    prompts: Sequence[dict],
    out_dir: str,
    stop_after: int | None = None,
    validation: selection_lib.Validation | None = None,
) -> dict[str, float]:
    """Runs (or resumes) RL over `prompts` through the shared loop (`train.loop`), with
    checkpoints in OUT_DIR/ckpt (the whole RLState; `params`: the policy, what evaluation
    restores) and one metrics row per step in OUT_DIR/metrics.jsonl. `stop_after`:
    return after that many steps in this call (tests simulate a kill). validation:
    checkpoint selection's eval_fn (`selection.Validation`), run every
    `validation.every` steps and at the end; the checkpoints then go to
    OUT_DIR/train_ckpt (OUT_DIR/ckpt will hold the selected policy). Returns the last
    step's metrics and 'step'."""
    s = runner.settings
    ckpt_dir = os.path.join(out_dir, selection_lib.TRAIN_CKPT if validation else "ckpt")
    if validation is not None:
        validation.prepare(ckpt_dir)
    source = batching.EpochSource.over(
        prompts, s.batch_size, s.seed, num_data_shards=s.num_data_shards, num_epochs=s.num_epochs
    )
    total = source.iterator().steps_per_epoch * s.num_epochs
    if s.max_steps is not None:
        total = min(total, s.max_steps)
    rows_per_step = s.batch_size * s.samples_per_prompt
    logdir = os.path.join(os.path.dirname(out_dir), "logs", os.path.basename(out_dir))
    state, last = loop.run_training(
        stage="rl",
        state=runner.state,
        step=runner.train_step,
        make_batches=source.iterator,
        data_position=source.position,
        settings=loop.LoopSettings(
            num_steps=total,
            save_every=s.checkpoint_every,
            log_every=10,
            profile_steps=s.profile_steps,
            tensorboard=s.tensorboard,
            wandb_project=s.wandb_project,
            eval_every=validation.every if validation else 0,
        ),
        ckpt_dir=ckpt_dir,
        eval_fn=validation,
        metrics_path=os.path.join(out_dir, "metrics.jsonl"),
        tensorboard_dir=os.path.join(logdir, "tb"),
        profile_dir=os.path.join(logdir, "profile"),
        tokens_per_batch=lambda _, metrics: metrics["response_length"] * rows_per_step,
        export_params=runner.export_policy,
        stop_after=stop_after,
    )
    runner.state = state
    return {**last, "step": int(jax.device_get(state.step))}


# ----------------------------------------------------------------------------- stage
def _load_prompts(prompts: Any, data: tasks.TaskSources | None) -> list[dict]:
    if prompts is None:
        prompts = tasks.need_data(data, "rl").source("prompts", "train")
    return list(prompts() if callable(prompts) and not hasattr(prompts, "__iter__") else prompts)


def policy_layout(policy: Any, settings: RLSettings, task: str | None) -> Any:
    """The policy artifact's input layout; RLSettings may restate it but not change it."""
    return policy.layout_for(
        task,
        "RLSettings",
        max_context=settings.max_context,
        max_response=settings.max_response,
        prompt_suffix=settings.prompt_suffix,
    )


def make_sample_fn(
    config: Any, mesh: Any, rules: Any, settings: RLSettings, vocab: Any, max_response: int
):
    """The decoding sampler at the RL temperature, samples_per_prompt rows per prompt of
    up to `max_response` new tokens; every stop id of the policy's vocabulary ends a
    response. Prompts run at static length buckets (`decoding.buckets`, RLSettings.
    bucket_groups): the padded path's samples at the cost of the real lengths."""
    plain = sample.make_sampler(
        config,
        mesh,
        rules,
        max_new_tokens=max_response,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        eos_id=stop_ids(vocab),
        pad_id=vocab.pad_id,
        num_samples=settings.samples_per_prompt,
    )
    return buckets.BucketedSampler(
        plain, None, groups=settings.bucket_groups, num_samples=settings.samples_per_prompt
    )


@gin.configurable("rl")
def run_stage(
    workdir: str = gin.REQUIRED,
    name: str = "rlaif",
    reward_builder: Callable[..., rewards.RewardFn] = gin.REQUIRED,
    settings: RLSettings | None = None,
    policy_dir: str = "sft",
    model_overrides: dict | None = None,
    prompts: Any = None,
    stop_after: int | None = None,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    data: tasks.TaskSources | None = None,
    selection: selection_lib.SelectionSettings | None = None,
    lora: LoRAConfig | None = None,
    value_on_policy_trunk: bool = False,
    placements: dict[str, RolePlacement] | None = None,
    memory_plan: MemoryPlanSettings | None = None,
    plan_only: bool = False,
) -> dict[str, float]:
    """RL from the policy model in WORKDIR/<policy_dir> into WORKDIR/rl_<name>/.

    The policy's config, tokenizer and input layout come from its artifact
    (`model_artifact`; `model_overrides` may change compute settings only). The anchor is
    the same params frozen, the value model its trunk under a fresh scalar head.
    reward_builder(workdir, mesh, rules, task=TASK) -> RewardFn: `reward_model_from_checkpoint`
    (RLAIF: rm_dir='rm_ai'; RLHF: rm_dir='rm_human') or `direct_labeler_from_checkpoint`
    (d-RLAIF); gin/method/{rlaif,rlhf,d_rlaif}.gin pick one; TASK is `data`'s task (or
    None). prompts: records {id, context} (default: `data`'s 'prompts' role, split
    'train'). mesh / rules / data: the objects the CLI builds from gin
    (`rlaif_jax.configurables`); from Python, None = `make_mesh()` / `get_rules()`; data
    (the task's `data.tasks.TaskSources`) is needed unless `prompts` are given.
    selection: checkpoint selection (paper §1.5, `rl.selection`): the K checkpoints
    with the highest reward on the task's validation prompts are judged against SFT by
    the AI judge and the best becomes the policy (`rl.selection`; None: the last step).
    lora (gin: LoRAConfig.*, gin/method/lora.gin): train LoRA adapters of policy and
    value on the frozen SFT params, which are also the anchor; checkpoints hold the
    adapters' state and the merged policy. value_on_policy_trunk: the value is a head on
    the policy's trunk (one forward pass; no trunk of its own).
    placements (gin: rl.placements = {'policy': @policy/RolePlacement(), ...}): each
    role's devices, mesh, rules, param dtype, remat, offload (`rl.placement`; roles
    without one share mesh / rules; gin/placement/split_roles.gin puts the policy, the
    value, the anchor and the reward role on devices of their own). memory_plan: the memory plan checked before
    anything is loaded (`sharding.memory.MemoryPlanSettings`); plan_only (`rlaif-jax
    plan`): write the model description (model.json, tokenizer; no weights), print
    the plan and return {'peak_gb', 'fits'}.
    Output: a model artifact (model.json, tokenizer, ckpt with the policy params) and,
    with selection, selection.json (which step was picked and why).
    """
    start = time.time()
    settings = settings or RLSettings()
    out_dir = os.path.join(workdir, f"rl_{name}")
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    rules = rules if rules is not None else rules_lib.get_rules()
    policy = model_artifact.open_model(
        model_artifact.resolve_model_dir(workdir, policy_dir, "rl.policy_dir")
    )
    config = policy.config_with(model_overrides, "rl.model_overrides")
    task = data.task if data is not None else None
    layout = policy_layout(policy, settings, task)
    rp = rl_placement.resolve(
        placements, mesh, rules, settings.anchor_dtype, rl_placement.reward_role_of(reward_builder)
    )
    rl_placement.check_layout(rp, lora, value_on_policy_trunk)
    mesh, rules, config = rp.learner.mesh, rp.learner.rules, rp.policy_config(config)
    plan = rl_placement.check_memory(
        config, settings, layout, rp, reward_builder, workdir, task, memory_plan, plan_only,
        lora=lora, value_on_policy_trunk=value_on_policy_trunk,
    )  # fmt: skip
    # The model's description (model.json, tokenizer; no weights) before a plan returns:
    # `rlaif-jax plan` plans the later steps that read this policy (evaluate) from it.
    model_artifact.write_model_artifact(
        out_dir, config, "lm", policy.vocab, layout, policy.family, policy.source
    )
    if plan_only:
        return {"peak_gb": plan.peak() / 1e9, "fits": float(plan.fits)}
    sft, _ = model_artifact.load_params(policy, mesh, rules, "lm", config)
    roles = roles_lib.build_roles(
        config, sft, mesh, rules, rp.anchor_dtype, settings.seed, lora, value_on_policy_trunk
    )
    roles = rl_placement.place_roles(roles, config, rp)
    reward_fn = rl_placement.build_reward(reward_builder, workdir, rp, task)
    sample_fn = make_sample_fn(config, mesh, rules, settings, policy.vocab, layout.max_response)
    if lora is not None:  # the runner samples with its adapters, merged into the anchor
        sample_fn = policy_value.lora_sampler(sample_fn, roles, lora, config.dtype)
    runner = RLRunner(settings, roles, reward_fn, policy.vocab, mesh, rules, sample_fn, layout)
    validation = None
    if selection is not None:
        store = CandidateStore(out_dir, selection.num_candidates)
        val_prompts = selection_lib.validation_prompts(data, selection)
        validation = selection_lib.Validation(runner, store, val_prompts, selection, settings.seed)
    last = train(runner, _load_prompts(prompts, data), out_dir, stop_after, validation)
    if stop_after is not None:
        return last
    summary = {k: float(v) for k, v in last.items() if isinstance(v, int | float)}
    summary["truncated_prompts"] = float(runner.truncation.truncated_context)
    if validation is not None:
        # Only one model at a time from here: the RL state, anchor and reward go first.
        del runner, roles, reward_fn, sample_fn, sft, validation
        picked = selection_lib.run_selection(
            workdir, out_dir, store, val_prompts, selection, policy=policy, config=config,
            layout=layout, mesh=mesh, rules=rules, task=task, final_step=int(last["step"]),
        )  # fmt: skip
        summary["selected_step"] = float(picked["selected_step"])
    artifacts.write_complete(out_dir, summary, time.time() - start)
    return summary

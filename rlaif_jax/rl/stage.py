"""`rlaif-jax rl`: A2C with KL to the SFT anchor (paper §1.5), reward from an RM or d-RLAIF.

Steps (`runner.RLRunner.step`) run for `num_epochs` over the RL prompts (or `max_steps`).
Checkpoints hold the learner state (policy, value, optimizer, reward statistics), the
data position and the step, so a restart resumes exactly (the step RNG is
fold_in(seed, step)).

Outputs: WORKDIR/rl_<name>/ckpt (checkpoints), WORKDIR/rl_<name>/metrics.jsonl (one
row per step: reward mean/std, KL, entropy, response length, value loss, explained
variance, EOS fraction, rollout and update tokens/s), WORKDIR/rl_<name>/COMPLETE.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
import numpy as np

from rlaif_jax import artifacts, model_artifact
from rlaif_jax.data import batching, tasks
from rlaif_jax.data.vocab import stop_ids
from rlaif_jax.decoding import sample
from rlaif_jax.rl import rewards
from rlaif_jax.rl import roles as roles_lib
from rlaif_jax.rl.runner import RLRunner, RLSettings
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.train.checkpoint import Checkpointer, PreemptionHandler
from rlaif_jax.train.metrics import MetricsWriter, Progress

logger = logging.getLogger("rlaif_jax.rl")


def train(
    runner: RLRunner,
    prompts: Sequence[dict],
    out_dir: str,
    stop_after: int | None = None,
) -> dict[str, float]:
    """Runs (or resumes) RL over `prompts` with checkpoints in OUT_DIR/ckpt and one
    metrics row per step in OUT_DIR/metrics.jsonl. `stop_after`: return after that many
    steps in this call (tests simulate a kill). Returns the last step's metrics."""
    s = runner.settings
    shards = batching.read_local_shards(prompts, s.num_data_shards)
    it = batching.EpochIterator(
        shards, s.num_data_shards, s.batch_size, seed=s.seed, num_epochs=s.num_epochs
    )
    total = it.steps_per_epoch * s.num_epochs
    if s.max_steps is not None:
        total = min(total, s.max_steps)
    ckpt = Checkpointer(os.path.join(out_dir, "ckpt"))
    writer = MetricsWriter(
        os.path.join(out_dir, "metrics.jsonl"),
        os.path.join(os.path.dirname(out_dir), "logs", os.path.basename(out_dir), "tb"),
    )
    step = 0
    latest = ckpt.latest_step()
    if latest is not None:
        runner.state, meta = ckpt.restore(runner.state)
        it.state = batching.DataState.from_dict(meta["data"])
        step = int(meta["step"])
        logger.info("rl: resumed from step %d", step)
    writer.truncate_after(step)
    base_rng = jax.random.PRNGKey(s.seed)
    preempt = PreemptionHandler()
    last: dict[str, float] = {}
    done_here = 0
    progress = Progress("rl", total, start_step=step, every=10)
    try:
        while step < total:
            records = next(it)
            t0 = time.time()
            last = runner.step(records, jax.random.fold_in(base_rng, step))
            step += 1
            done_here += 1
            last.update(step_seconds=time.time() - t0)
            writer.write(step, last)
            last["step"] = step
            progress.update(
                step,
                {k: last[k] for k in ("reward_mean", "kl", "response_length")},
                tokens=last["response_length"] * s.batch_size * s.samples_per_prompt,
            )
            if not np.isfinite(last["loss"]):
                raise FloatingPointError(
                    f"RL loss is {last['loss']} at step {step}; the last good checkpoint is kept."
                )
            stopping = preempt.requested or (stop_after is not None and done_here >= stop_after)
            if step % s.checkpoint_every == 0 or step == total or stopping:
                ckpt.save(
                    step,
                    runner.state,
                    {"step": step, "data": it.state.to_dict()},
                    params=runner.state.params["policy"],  # what evaluation restores
                )
            if stopping:
                break
    finally:
        preempt.close()
        writer.close()
        ckpt.close()
    if latest is not None and latest == total and not last:
        last = {"step": total}
    return last


# ----------------------------------------------------------------------------- stage
def _load_prompts(prompts: Any) -> list[dict]:
    if prompts is None:
        prompts = tasks.task_sources().source("prompts", "train")
    return list(prompts() if callable(prompts) and not hasattr(prompts, "__iter__") else prompts)


def policy_layout(policy: Any, settings: RLSettings, task: str | None) -> Any:
    """The policy artifact's input layout; RLSettings may restate it but not change it."""
    return policy.layout_for(
        task,
        "RLSettings",
        {"max_context": "RLSettings.max_prompt_len", "max_response": "RLSettings.max_new_tokens"},
        max_context=settings.max_prompt_len,
        max_response=settings.max_new_tokens,
        prompt_suffix=settings.prompt_suffix,
    )


def make_sample_fn(
    config: Any, mesh: Any, rules: Any, settings: RLSettings, vocab: Any, max_new_tokens: int
):
    """The decoding sampler at the RL temperature, samples_per_prompt rows per prompt;
    every stop id of the policy's vocabulary ends a response."""
    return sample.make_sampler(
        config,
        mesh,
        rules,
        max_new_tokens=max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        eos_id=stop_ids(vocab),
        pad_id=vocab.pad_id,
        num_samples=settings.samples_per_prompt,
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
) -> dict[str, float]:
    """RL from the policy model in WORKDIR/<policy_dir> into WORKDIR/rl_<name>/.

    The policy's config, tokenizer and input layout come from its artifact
    (`model_artifact`; `model_overrides` may change compute settings only). The anchor is
    the same params frozen, the value model its trunk under a fresh scalar head.
    reward_builder(workdir, mesh, rules) -> RewardFn: `reward_model_from_checkpoint`
    (RLAIF: rm_dir='rm_ai'; RLHF: rm_dir='rm_human') or `direct_labeler_from_checkpoint`
    (d-RLAIF); gin/method/{rlaif,rlhf,d_rlaif}.gin pick one. prompts: records
    {id, context} (default: the gin-configured task's 'prompts' role, split 'train').
    Output: a model artifact (model.json, tokenizer, ckpt with the policy params).
    """
    start = time.time()
    settings = settings or RLSettings()
    out_dir = os.path.join(workdir, f"rl_{name}")
    mesh = mesh_lib.make_mesh()
    rules = rules_lib.get_rules()
    policy = model_artifact.open_model(
        model_artifact.resolve_model_dir(workdir, policy_dir, "rl.policy_dir")
    )
    config = policy.config_with(model_overrides, "rl.model_overrides")
    task = tasks.task_sources().task if prompts is None else None
    layout = policy_layout(policy, settings, task)
    sft, _ = model_artifact.load_params(policy, mesh, rules, "lm", config)
    model_artifact.write_model_artifact(
        out_dir, config, "lm", policy.vocab, layout, policy.family, policy.source
    )
    roles = roles_lib.build_roles(config, sft, mesh, rules, settings.anchor_dtype, settings.seed)
    reward_fn = reward_builder(workdir, mesh, rules)
    sample_fn = make_sample_fn(config, mesh, rules, settings, policy.vocab, layout.max_response)
    runner = RLRunner(settings, roles, reward_fn, policy.vocab, mesh, rules, sample_fn, layout)
    last = train(runner, _load_prompts(prompts), out_dir, stop_after=stop_after)
    if stop_after is not None:
        return last
    summary = {k: float(v) for k, v in last.items() if isinstance(v, int | float)}
    summary["truncated_prompts"] = float(runner.truncation.truncated_context)
    artifacts.write_complete(out_dir, summary, time.time() - start)
    return summary

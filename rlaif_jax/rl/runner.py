"""The RL step without files: settings, optimizer and `RLRunner` (usable from Colab).

`RLSettings` is gin-configurable (gin files bind `RLSettings.*`, `rl.settings =
@RLSettings()`) and an ordinary frozen dataclass from Python; nothing else here reads gin.

One step: B prompts (global `batch_size`) × S samples are rolled out with the very
params being trained (T = 0.9), rewarded on detokenized text, scored by policy, anchor
and value in batched teacher-forced passes (each on its role's devices: `PolicyRoles.
value_side` / `anchor_side`; an offloaded anchor comes to device memory for its pass
only, an offloaded value model's params and optimizer state wait on the host while the
policy samples and the reward role scores), turned into returns/advantages, and one gradient step is taken (`microbatches`
slices accumulated). `RLRunner.train_step` is the
`train.loop` Stepper the RL stage runs through the shared loop.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
import numpy as np
import optax

from rlaif_jax.data import batching
from rlaif_jax.data.layout import PAPER_MAX_CONTEXT, PAPER_MAX_RESPONSE, InputLayout
from rlaif_jax.data.vocab import stop_ids
from rlaif_jax.rl import a2c, rewards
from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.rl.roles import PolicyRoles
from rlaif_jax.sharding import partition
from rlaif_jax.sharding import placement as placement_lib
from rlaif_jax.train import optim
from rlaif_jax.train.profiler import check_profile_steps

logger = logging.getLogger("rlaif_jax.rl")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RLSettings:
    """RL hyperparameters (paper App. G defaults; toy gin files shrink them).

    batch_size: prompts per rollout batch (global); samples_per_prompt: S.
    num_epochs: passes over the RL prompts; max_steps: stop earlier (None = epochs).
    updates_per_batch: gradient steps on each rollout batch; must be 1 (on-policy A2C:
        further steps would reuse the advantages off-policy with no importance ratio).
    microbatches: slices of the rollout batch whose gradients one update accumulates
        (activation memory of N/M rows; the same update as the whole batch).
    learning_rate / value_learning_rate (None = learning_rate), optimizer, grad_clip:
        one optimizer per part (policy, value), each clipping its own gradient norm.
    kl_coef (β), reward_weight ('one' | 'one_minus_beta'), normalize ('tokens' |
    'sequences'), whiten_advantages, entropy_coef, value_coef: see `a2c`.
    normalize_rewards: divide rewards by a running std after subtracting a running mean.
    max_context / max_response / prompt_suffix: None = the policy artifact's layout.
    anchor_dtype: 'float32' | 'bfloat16' storage of the frozen SFT anchor.
    bucket_groups: rollout prompts are sorted by length into this many equal groups, each
        sampled at the smallest static bucket width holding its longest prompt
        (`decoding.buckets`; same samples as the padded batch); 1 = only trim the batch.
    profile_steps (first, last), tensorboard, wandb_project: as in
    `train.loop.LoopSettings` (e.g. `RLSettings.profile_steps = (5, 8)`: a jax.profiler
    trace of those steps into WORKDIR/logs/rl_<name>/profile).
    """

    batch_size: int = 128
    samples_per_prompt: int = 1
    num_epochs: int = 8
    max_steps: int | None = None
    learning_rate: float = 1e-5
    optimizer: str = "adam"
    grad_clip: float | None = 1.0
    value_learning_rate: float | None = None
    updates_per_batch: int = 1
    microbatches: int = 1
    temperature: float = 0.9
    top_k: int = 0
    top_p: float = 1.0
    # The policy's input layout comes from its model artifact; these may only restate it
    # (None = take the artifact's; a different value is an error naming both).
    max_context: int | None = None
    max_response: int | None = None
    prompt_suffix: str | None = None
    kl_coef: float = 0.05
    reward_weight: str = "one"
    normalize: str = "tokens"
    whiten_advantages: bool = False
    entropy_coef: float = 0.0
    value_coef: float = 1.0
    normalize_rewards: bool = False
    anchor_dtype: str = "float32"
    checkpoint_every: int = 50
    num_data_shards: int = 1
    seed: int = 0
    bucket_groups: int = 1
    profile_steps: tuple[int, int] | None = None
    tensorboard: bool = True
    wandb_project: str | None = None

    def __post_init__(self):
        if isinstance(self.profile_steps, list):  # a gin list binding
            object.__setattr__(self, "profile_steps", tuple(self.profile_steps))
        check_profile_steps(self.profile_steps, "RLSettings.profile_steps")
        # A second gradient step on the same rollout is off-policy: the advantages and
        # log-probs were computed under the params before the first step, and without an
        # importance ratio (PPO-style) the update is biased. The paper's A2C is on-policy.
        rows = self.batch_size * self.samples_per_prompt
        if self.microbatches < 1 or rows % self.microbatches:
            raise ValueError(
                f"RLSettings.microbatches = {self.microbatches!r} must divide the "
                f"{rows} rollouts of a step (RLSettings.batch_size x samples_per_prompt)."
            )
        if self.updates_per_batch != 1:
            raise ValueError(
                f"RLSettings.updates_per_batch = {self.updates_per_batch!r}: only 1 is "
                "supported. More steps on one rollout batch would reuse its advantages "
                "off-policy without an importance ratio, which is not the paper's on-policy "
                "A2C (REINFORCE with baseline); set RLSettings.updates_per_batch = 1."
            )

    @property
    def hyper(self) -> a2c.A2CHyper:
        return a2c.A2CHyper(
            kl_coef=self.kl_coef,
            reward_weight=self.reward_weight,
            normalize=self.normalize,
            whiten_advantages=self.whiten_advantages,
            entropy_coef=self.entropy_coef,
            value_coef=self.value_coef,
        )


def make_optimizer(settings: RLSettings) -> optax.GradientTransformation:
    """The RL optimizer (the paper does not state one; Adam at lr 1e-5 by default): one
    `train.optim.make_optimizer` per part, so policy and value clip their gradient norms
    apart (`learner.per_part_optimizer`)."""
    rates = {
        "policy": settings.learning_rate,
        "value": settings.value_learning_rate or settings.learning_rate,
    }
    return learner_lib.per_part_optimizer(
        lambda part: optim.make_optimizer(
            name=settings.optimizer, schedule=rates[part], clip_norm=settings.grad_clip
        )
    )


def decode_response(vocab: Any, ids: np.ndarray, length: int) -> str:
    """Text of a response: tokens up to (not including) the first stop id."""
    seq = [int(t) for t in ids[:length]]
    stops = set(stop_ids(vocab))
    cut = next((i for i, t in enumerate(seq) if t in stops), len(seq))
    return vocab.decode(seq[:cut])


def settings_layout(settings: RLSettings) -> InputLayout:
    """The layout RLSettings state on their own (Colab use without an artifact)."""
    return InputLayout(
        prompt_suffix=settings.prompt_suffix or "",
        max_context=settings.max_context or PAPER_MAX_CONTEXT,
        max_response=settings.max_response or PAPER_MAX_RESPONSE,
    )


def step_breakdown(info: dict, update_s: float, step_s: float, tokens: float) -> dict:
    """Where one RL step's seconds went (issue #22): rollout (sampling, incl. moving the
    responses to the host), reward scoring (detokenize + reward model / labeler), the
    teacher-forced forward passes (policy, anchor, value), the update (targets + optimizer
    step), each in seconds and as a share of the step; and new tokens/s of the whole loop."""
    parts = {
        "rollout": info["rollout_s"],
        "reward": info["reward_s"],
        "forward": info["forward_s"],
        "update": update_s,
    }
    out = {f"time_{k}_seconds": v for k, v in parts.items()}
    out.update({f"time_{k}_share": v / max(step_s, 1e-9) for k, v in parts.items()})
    out["loop_tokens_per_s"] = tokens / max(step_s, 1e-9)
    out["step_seconds"] = step_s
    return out


class RLRunner:
    """The RL step without files, configured by its arguments (gin builds only the
    `RLSettings` the stage passes): `step(records) -> metrics` (usable from Colab).

    sample_fn(policy_params, prompt_tokens [B, Lp], prompt_lengths [B], rng) ->
    `decoding.sample.SampleOutput` (tokens / logprobs / mask [B·S, T], lengths,
    prompt_index [B·S]); reward_fn: a `rewards.RewardFn`; vocab: the POLICY's; layout:
    the policy's input layout (default: `settings_layout(settings)`).
    """

    def __init__(
        self,
        settings: RLSettings,
        roles: PolicyRoles,
        reward_fn: rewards.RewardFn,
        vocab: Any,
        mesh: Any,
        rules: Any,
        sample_fn: Callable[..., Any],
        layout: InputLayout | None = None,
    ):
        self.layout = layout or settings_layout(settings)
        self.settings, self.roles, self.reward_fn = settings, roles, reward_fn
        self.vocab, self.mesh, self.sample_fn = vocab, mesh, sample_fn
        value_mesh = roles.value_side.mesh if roles.value_side is not None else None
        if value_mesh is not None and placement_lib.same_devices(value_mesh, mesh):
            value_mesh = None
        with partition.sharding_context(mesh, rules):
            self.state, state_shardings = learner_lib.create_state(
                roles.params,
                roles.param_shardings,
                make_optimizer(settings),
                mesh,
                settings.seed,
                value_mesh=value_mesh,
            )
        roles.params = None  # the state owns (and donates) them from now on
        self.learner = learner_lib.make_learner(
            roles.policy_model,
            roles.value_model,
            settings.hyper,
            mesh,
            rules,
            state_shardings,
            roles.param_shardings,
            roles.anchor_shardings,
            pad_id=vocab.pad_id,
            normalize_rewards=settings.normalize_rewards,
            microbatches=settings.microbatches,
            lora=roles.lora,
            value_on_policy_trunk=roles.value_on_policy_trunk,
            value_side=roles.value_side,
            anchor_side=roles.anchor_side,
        )
        if roles.offload_anchor:
            roles.anchor = placement_lib.to_host(roles.anchor)
        self._export = None
        self.truncation = batching.TruncationStats()
        self._stops = np.asarray(stop_ids(vocab), np.int32)

    @property
    def policy_params(self) -> Any:
        """What `sample_fn` takes: the policy's params (its adapters with LoRA)."""
        return self.state.params["policy"]

    def export_policy(self, state: learner_lib.RLState) -> Any:
        """The policy of `state` as a plain LM params tree (what checkpoints hold for
        evaluation and export): with LoRA the frozen base with the adapters merged into
        its kernels (`policy_value.lora_merger`), every leaf float32."""
        if self.roles.lora is None:
            return state.params["policy"]
        if self._export is None:
            from rlaif_jax.rl.policy_value import lora_merger

            self._export = lora_merger(self.roles.lora, np.float32)
        tree = self._export(self.roles.anchor, state.params["policy"])
        return jax.tree.map(lambda x: x if x.dtype == np.float32 else x.astype(np.float32), tree)

    def rollout(self, records: Sequence[dict], rng: jax.Array) -> tuple[dict, dict]:
        """Samples, rewards and scores one batch. Returns (global batch dict, host info)."""
        tokens, lengths = self.layout.prompt_batch(records, self.vocab, stats=self.truncation)
        prompts = partition.global_batch({"tokens": tokens, "lengths": lengths}, self.mesh)
        self._move_value(placement_lib.to_host)  # idle until the score pass
        t0 = time.time()
        out = self.sample_fn(self.policy_params, prompts["tokens"], prompts["lengths"], rng)
        resp = rewards.host_local_rows(out.tokens)
        resp_len = rewards.host_local_rows(out.lengths)
        which = rewards.host_local_rows(out.prompt_index)
        rollout_s = time.time() - t0
        local0 = partition.process_slice(len(records) * jax.process_count()).start
        idx = which - local0
        if idx.min() < 0 or idx.max() >= len(records):
            raise RuntimeError("sampler rows are not laid out prompt-major per process")
        contexts = [records[i]["context"] for i in idx]
        texts = [decode_response(self.vocab, resp[j], int(resp_len[j])) for j in range(len(idx))]
        t1 = time.time()
        scores = np.asarray(self.reward_fn(contexts, texts), np.float32)
        reward_s = time.time() - t1
        batch = {
            "prompt_tokens": tokens[idx],
            "prompt_lengths": lengths[idx],
            "scores": scores,
        }
        batch = partition.global_batch(batch, self.mesh)
        batch.update(
            response_tokens=out.tokens,
            response_mask=out.mask,
            sampler_logprobs=out.logprobs * out.mask,
        )
        t2 = time.time()
        self._move_value(placement_lib.to_device)
        anchor = self.roles.anchor
        if self.roles.offload_anchor:  # in device memory for this pass only
            anchor = placement_lib.to_device(anchor)
        logprobs, anchor_lp, values = self.learner.score_fn(self.state.params, anchor, batch)
        # Block here so the breakdown charges these passes to the forward, not the update.
        jax.block_until_ready((logprobs, anchor_lp, values))
        del anchor  # the device copy of an offloaded anchor goes
        forward_s = time.time() - t2
        batch.update(logprobs=logprobs, anchor_logprobs=anchor_lp, values=values)
        mask = rewards.host_local_rows(out.mask).astype(np.float32)
        info = {
            "scores": scores,
            "texts": texts,
            "contexts": contexts,
            "num_tokens": float(mask.sum()),
            "resp_len": mask.sum(-1),
            "eos": np.array(
                [np.isin(r[: int(n)], self._stops).any() for r, n in zip(resp, resp_len)]
            ),
            "rollout_s": rollout_s,
            "reward_s": reward_s,
            "forward_s": forward_s,
        }
        return batch, info

    def _move_value(self, move: Callable[[Any], Any]) -> None:
        """The value part of the state (params and optimizer state) to host or device
        memory (`PolicyRoles.offload_value`; a no-op where the backend has no host kind)."""
        if not self.roles.offload_value:
            return
        s = self.state
        self.state = s.replace(
            params={**s.params, "value": move(s.params["value"])},
            opt_state={**s.opt_state, "value": move(s.opt_state["value"])},
        )

    def step(self, records: Sequence[dict], rng: jax.Array | None = None) -> dict[str, float]:
        """One RL step on this process's prompt records; returns host-side metrics.

        rng: the rollout's key (default fold_in(state.rng, state.step): PRNGKey(seed)
        folded with the step, the same in a resumed run)."""
        t_start = time.time()
        if rng is None:
            rng = jax.random.fold_in(self.state.rng, self.state.step)
        batch, info = self.rollout(records, rng)
        t0 = time.time()
        self.state, targets, rollout_metrics = self.learner.targets_fn(self.state, batch)
        batch.update(targets)
        update_batch = {k: batch[k] for k in learner_lib.UPDATE_FIELDS}
        self.state, parts = self.learner.update_fn(self.state, update_batch, self.roles.anchor)
        parts = {k: float(v) for k, v in jax.device_get({**rollout_metrics, **parts}).items()}
        update_s = time.time() - t0
        ntok = info["num_tokens"] * jax.process_count()
        scores = info["scores"]
        return {
            "reward_mean": float(np.mean(scores)),
            "kl": parts.pop("kl"),
            "response_length": float(np.mean(info["resp_len"])),
            "reward_std": float(np.std(scores)),
            "eos_fraction": float(np.mean(info["eos"])),
            "rollout_tokens_per_s": ntok / max(info["rollout_s"], 1e-9),
            "reward_seconds": info["reward_s"],
            "update_tokens_per_s": ntok / max(update_s, 1e-9),
            **parts,
            **step_breakdown(info, update_s, time.time() - t_start, ntok),
        }

    def train_step(self, state: learner_lib.RLState, records: Sequence[dict]):
        """The `train.loop` Stepper: (state, local prompt records) -> (state, metrics)."""
        self.state = state
        metrics = self.step(records)
        return self.state, metrics

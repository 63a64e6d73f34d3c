"""The A2C learner on the shared train loop: rollout scoring, targets and the update.

Shapes: N rollouts (prompts × samples), Lp prompt length, T new tokens, L = Lp + T.

The trainable state is an `RLState` (a `train.train_state.TrainState` plus running reward
statistics) whose params are `{"policy", "value"}` under one optimizer per part
(`train.train_state.per_part_optimizer`): each part clips its own gradient norm, so the value
loss (however scaled) never rescales the policy's update. The frozen anchor (SFT) is
passed separately and has no optimizer state.

- `score_fn(params, anchor, batch) -> (logprobs, anchor_logprobs, values)` each [N, T]:
  teacher-forced passes of the policy, the anchor and the value model over the packed
  rows (`policy_value.PolicyValue`: full copies or LoRA adapters on the anchor, the value
  on its own trunk or on the policy's). The KL-control reward uses the policy's
  teacher-forced log-probs, the same computation as the anchor's (the KV-cached
  sampler's differ in low precision).
- `targets_fn(state, batch) -> (state, batch)`: returns / advantages fixed at rollout time
  (`a2c.rollout_targets`), the KL metrics and the batch's token count.
- `update_fn(state, batch, anchor) -> (state, metrics)`: one gradient step of
  policy + value_coef·value − entropy_coef·entropy by `train.loop.make_train_step`, with
  `microbatches` strided slices accumulated (the token mean is normalised by the whole
  batch's tokens, so M slices give the one-batch update). `anchor` (not donated) is the
  frozen base of LoRA adapters; without LoRA it is not read and may be omitted.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rlaif_jax.models.lora import LoRAConfig
from rlaif_jax.rl import a2c, rollout
from rlaif_jax.rl.policy_value import PolicyValue
from rlaif_jax.sharding import partition
from rlaif_jax.sharding.rules import Rules
from rlaif_jax.train import loop
from rlaif_jax.train import state as train_state

PyTree = Any

PARTS = ("policy", "value")
# The batch fields one update reads (the rest stay out of the microbatch split).
UPDATE_FIELDS = (
    "prompt_tokens",
    "prompt_lengths",
    "response_tokens",
    "response_mask",
    "returns",
    "advantages",
    "batch_tokens",
)


class RLState(train_state.TrainState):
    """The loop's TrainState (step, params {"policy", "value"}, opt_state, rng) plus the
    running reward statistics: everything an exact resume needs besides the data position."""

    reward_stats: a2c.RunningStats


@dataclasses.dataclass(frozen=True)
class Learner:
    """Jitted rollout scoring, targets and update for one (policy, value, optimizer)."""

    score_fn: Callable[..., Any]
    targets_fn: Callable[..., Any]
    update_fn: Callable[..., Any]
    state_shardings: Any


def per_part_optimizer(
    make_part: Callable[[str], optax.GradientTransformation],
) -> optax.GradientTransformation:
    """The RL optimizer: `make_part(part)` for each of policy and value, clipped apart."""
    return train_state.per_part_optimizer({part: make_part(part) for part in PARTS})


def create_state(params: PyTree, param_shardings: PyTree, tx, mesh: Mesh, seed: int):
    """(RLState, its shardings), born sharded; its rng is PRNGKey(seed), so step s of a
    run samples with fold_in(PRNGKey(seed), s) whether or not it resumed."""
    return train_state.create_sharded_state(
        params,
        param_shardings,
        tx,
        mesh,
        seed,
        state_cls=RLState,
        reward_stats=a2c.RunningStats.zeros(),
    )


def _packed(batch: dict[str, jax.Array], pad_id: int) -> rollout.Packed:
    return rollout.pack_sequences(
        batch["prompt_tokens"],
        batch["prompt_lengths"],
        batch["response_tokens"],
        batch["response_mask"],
        pad_id,
    )


def make_loss_fn(
    policy_model: Any,
    value_model: Any,
    hyper: a2c.A2CHyper,
    pad_id: int,
    microbatches: int = 1,
    lora: LoRAConfig | None = None,
    value_on_policy_trunk: bool = False,
) -> Callable[..., Any]:
    """loss_fn(params, batch, rng, frozen=None) -> (total, parts) of one (micro)batch of
    rollouts; `frozen`: the LoRA base (the anchor), unused without `lora`. Bind it
    (functools.partial) to get the loop's `loss_fn(params, batch, rng)`.

    With normalize='tokens' the sum over this slice's tokens is divided by
    batch_tokens / microbatches (batch_tokens [N]: the whole batch's valid tokens on every
    row), so the mean of the M slices' losses and gradients is the one-batch token mean."""
    forward = PolicyValue(policy_model, value_model, lora, value_on_policy_trunk)

    def loss_fn(params, batch, rng, frozen=None):
        del rng
        packed = _packed(batch, pad_id)
        mask = batch["response_mask"].astype(jnp.float32)
        logp, logits, values = forward.outputs(params, frozen, packed, batch["response_tokens"])
        num_tokens = jnp.maximum(batch["batch_tokens"][0], 1.0) / microbatches
        total, parts = a2c.a2c_loss(
            logp,
            values,
            logits,
            batch["returns"],
            batch["advantages"],
            mask,
            hyper,
            num_tokens=num_tokens,
        )
        parts["explained_variance"] = a2c.explained_variance(values, batch["returns"], mask)
        parts["value_mean"] = a2c.masked_mean(values, mask)
        return total, parts

    return loss_fn


def make_learner(
    policy_model: Any,
    value_model: Any,
    hyper: a2c.A2CHyper,
    mesh: Mesh,
    rules: Rules,
    state_shardings: Any,
    param_shardings: PyTree,
    anchor_shardings: PyTree,
    pad_id: int,
    normalize_rewards: bool = False,
    microbatches: int = 1,
    lora: LoRAConfig | None = None,
    value_on_policy_trunk: bool = False,
) -> Learner:
    """Jitted functions over an RLState laid out as `state_shardings` (`create_state`).

    `param_shardings = {"policy": ..., "value": ...}` (NamedSharding trees; the layouts
    of `policy_value`: `lora` and `value_on_policy_trunk` say which);
    `rows` of every batch are sharded over ('data', 'fsdp'). A `batch` dict holds
    prompt_tokens [N, Lp], prompt_lengths [N], response_tokens / response_mask /
    sampler_logprobs (T = 1) [N, T], scores [N]; scoring adds logprobs /
    anchor_logprobs / values [N, T], targets add returns / advantages [N, T] and
    batch_tokens [N].
    """
    # P(('data', 'fsdp')) shards the leading dim of 1-D and 2-D batch arrays alike.
    rows = partition.batch_sharding(mesh, 1)
    rep = partition.replicated(mesh)

    forward = PolicyValue(policy_model, value_model, lora, value_on_policy_trunk)

    def score(params, anchor, batch):
        packed = _packed(batch, pad_id)
        tokens = batch["response_tokens"]
        policy_lp, _, values = forward.outputs(params, anchor, packed, tokens)
        anchor_lp = forward.anchor_logprobs(anchor, packed, tokens)
        mask = batch["response_mask"].astype(jnp.float32)
        return policy_lp * mask, anchor_lp * mask, values * mask

    def targets(state: RLState, batch):
        scores = batch["scores"].astype(jnp.float32)
        mask = batch["response_mask"].astype(jnp.float32)
        stats = state.reward_stats
        if normalize_rewards:
            stats = a2c.update_running_stats(stats, scores)
            scores = a2c.normalize_rewards(scores, stats)
        returns, advs = a2c.rollout_targets(
            scores, batch["logprobs"], batch["anchor_logprobs"], batch["values"], mask, hyper
        )
        # KL(π_rollout ‖ π_sft), k1 estimate on the sampled tokens: per token and per sequence.
        kl = a2c.per_token_kl(batch["logprobs"], batch["anchor_logprobs"], mask)
        metrics = {
            "kl": jnp.mean(jnp.sum(kl, axis=-1)),
            "kl_per_token": a2c.masked_mean(kl, mask),
            "return_mean": a2c.masked_mean(returns, mask),
            # How far the cached sampler's log-probs are from the teacher-forced ones.
            "sampler_logprob_gap": a2c.masked_mean(
                jnp.abs(batch["sampler_logprobs"] - batch["logprobs"]), mask
            ),
        }
        batch_tokens = jnp.full(scores.shape, jnp.sum(mask), jnp.float32)
        new = {"returns": returns, "advantages": advs, "batch_tokens": batch_tokens}
        return state.replace(reward_stats=stats), new, metrics

    loss_fn = make_loss_fn(
        policy_model, value_model, hyper, pad_id, microbatches, lora, value_on_policy_trunk
    )

    def update(state, batch, frozen=None):
        # The frozen base is an argument (not a closed-over constant): bound inside the jit.
        bound = functools.partial(loss_fn, frozen=frozen)
        return loop.make_train_step(bound, microbatches, part_grad_norms=PARTS)(state, batch)

    def with_rules(fn):
        def call(*args):
            with partition.sharding_context(mesh, rules):
                return fn(*args)

        return call

    st = state_shardings
    if lora is None:  # nothing frozen is read: the anchor stays out of the program
        update_in, update_fn = (st, rows), update
    else:
        update_in, update_fn = (st, rows, anchor_shardings), update
    jitted_update = with_rules(
        partition.jit_sharded(update_fn, update_in, (st, rep), donate_argnums=0)
    )

    def run_update(state, batch, anchor=None):
        if lora is None:
            return jitted_update(state, batch)
        if anchor is None:
            raise ValueError("a LoRA learner's update_fn needs the frozen base (the anchor).")
        return jitted_update(state, batch, anchor)

    return Learner(
        score_fn=with_rules(
            partition.jit_sharded(
                score, (param_shardings, anchor_shardings, rows), (rows, rows, rows)
            )
        ),
        targets_fn=with_rules(
            partition.jit_sharded(targets, (st, rows), (st, rows, rep), donate_argnums=0)
        ),
        update_fn=run_update,
        state_shardings=st,
    )

"""The A2C learner: batched rollout scoring and the update step, jitted with shardings.

Shapes: N rollouts (prompts × samples), Lp prompt length, T new tokens, L = Lp + T.

The trainable state holds the policy and the value model (`params = {"policy", "value"}`,
one optimizer over both: their trees are disjoint, so the value loss never moves the
policy). The frozen anchor (SFT) is passed separately and has no optimizer state.

- `score_fn(params, anchor, batch) -> (anchor_logprobs [N, T], values [N, T])`: one
  teacher-forced pass per model over the packed rows.
- `update_fn(state, batch) -> (state, metrics)`: one gradient step of
  policy + value_coef·value − entropy_coef·entropy on a rollout batch whose returns and
  advantages were fixed at rollout time (`a2c.rollout_targets`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rlaif_jax.rl import a2c, rollout
from rlaif_jax.sharding import partition
from rlaif_jax.sharding.rules import Rules

PyTree = Any


@flax.struct.dataclass
class LearnerState:
    """Everything an exact resume needs besides the data position and the host RNG seed."""

    step: jax.Array
    params: PyTree  # {"policy": lm params, "value": scalar-head params}
    opt_state: PyTree
    reward_stats: a2c.RunningStats


@dataclasses.dataclass(frozen=True)
class Learner:
    """Jitted rollout scoring and update for one (policy model, value model, optimizer)."""

    score_fn: Callable[..., Any]
    update_fn: Callable[..., Any]
    targets_fn: Callable[..., Any]
    init_state: Callable[[PyTree], LearnerState]
    state_shardings: Any


def _packed(batch: dict[str, jax.Array], pad_id: int) -> rollout.Packed:
    return rollout.pack_sequences(
        batch["prompt_tokens"],
        batch["prompt_lengths"],
        batch["response_tokens"],
        batch["response_mask"],
        pad_id,
    )


def make_learner(
    policy_model: Any,
    value_model: Any,
    tx: optax.GradientTransformation,
    hyper: a2c.A2CHyper,
    mesh: Mesh,
    rules: Rules,
    param_shardings: PyTree,
    anchor_shardings: PyTree,
    pad_id: int,
    normalize_rewards: bool = False,
) -> Callable[[PyTree], Learner]:
    """Returns `build(abstract_params) -> Learner` of jitted functions.

    `param_shardings = {"policy": ..., "value": ...}` (NamedSharding trees);
    `rows` of every batch are sharded over ('data', 'fsdp'). A `batch` dict holds
    prompt_tokens [N, Lp], prompt_lengths [N], response_tokens / response_mask /
    logprobs (sampler, T = 1) [N, T], and after scoring anchor_logprobs / values [N, T],
    scores [N], then returns / advantages [N, T].
    """
    # P(('data', 'fsdp')) shards the leading dim of 1-D and 2-D batch arrays alike.
    rows = partition.batch_sharding(mesh, 1)
    rep = partition.replicated(mesh)

    def init_state(params: PyTree) -> LearnerState:
        return LearnerState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            reward_stats=a2c.RunningStats.zeros(),
        )

    def state_shardings(params_abstract: PyTree) -> LearnerState:
        opt_abstract = jax.eval_shape(tx.init, params_abstract)
        return LearnerState(
            step=rep,
            params=param_shardings,
            opt_state=_opt_shardings(opt_abstract, param_shardings, rep),
            reward_stats=a2c.RunningStats(rep, rep, rep),
        )

    def score(params, anchor, batch):
        packed = _packed(batch, pad_id)
        anchor_lp, _ = rollout.policy_outputs(
            policy_model, anchor, packed, batch["response_tokens"]
        )
        values = rollout.value_outputs(value_model, params["value"], packed)
        mask = batch["response_mask"].astype(jnp.float32)
        return anchor_lp * mask, values * mask

    def targets(state: LearnerState, batch):
        scores = batch["scores"].astype(jnp.float32)
        stats = state.reward_stats
        if normalize_rewards:
            stats = a2c.update_running_stats(stats, scores)
            scores = a2c.normalize_rewards(scores, stats)
        returns, advs = a2c.rollout_targets(
            scores,
            batch["logprobs"],
            batch["anchor_logprobs"],
            batch["values"],
            batch["response_mask"],
            hyper,
        )
        return state.replace(reward_stats=stats), returns, advs

    def update(state: LearnerState, batch):
        packed = _packed(batch, pad_id)
        mask = batch["response_mask"].astype(jnp.float32)

        def loss_fn(params):
            logp, logits = rollout.policy_outputs(
                policy_model, params["policy"], packed, batch["response_tokens"]
            )
            values = rollout.value_outputs(value_model, params["value"], packed)
            total, parts = a2c.a2c_loss(
                logp, values, logits, batch["returns"], batch["advantages"], mask, hyper
            )
            parts["explained_variance"] = a2c.explained_variance(values, batch["returns"], mask)
            parts["value_mean"] = a2c.masked_mean(values, mask)
            return total, parts

        (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        parts["grad_norm"] = optax.global_norm(grads)
        # KL(π_rollout ‖ π_sft), k1 estimate on the sampled tokens: per token and per sequence.
        kl = a2c.per_token_kl(batch["logprobs"], batch["anchor_logprobs"], mask)
        parts["kl_per_token"] = a2c.masked_mean(kl, jnp.ones_like(mask) * mask)
        parts["kl"] = jnp.mean(jnp.sum(kl, axis=-1))
        parts["return_mean"] = a2c.masked_mean(batch["returns"], mask)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), parts

    def with_rules(fn):
        def call(*args):
            with partition.sharding_context(mesh, rules):
                return fn(*args)

        return call

    def build(params_abstract: PyTree) -> Learner:
        st = state_shardings(params_abstract)
        return Learner(
            score_fn=with_rules(
                partition.jit_sharded(
                    score, (param_shardings, anchor_shardings, rows), (rows, rows)
                )
            ),
            targets_fn=with_rules(
                partition.jit_sharded(targets, (st, rows), (st, rows, rows), donate_argnums=0)
            ),
            update_fn=with_rules(
                partition.jit_sharded(update, (st, rows), (st, rep), donate_argnums=0)
            ),
            init_state=with_rules(partition.jit_sharded(init_state, (param_shardings,), st)),
            state_shardings=st,
        )

    return build


def _opt_shardings(opt_abstract, param_shardings, rep):
    """Optimizer-state leaves shaped like a param take that param's sharding; others
    (counts, scalars) are replicated. Matched by tree path suffix, as optax nests the
    param tree inside its states."""
    flat_params = {
        jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_leaves_with_path(param_shardings)
    }

    def pick(path, leaf):
        key = jax.tree_util.keystr(path)
        for pkey, sh in flat_params.items():
            if key.endswith(pkey):
                return sh
        return rep

    return jax.tree_util.tree_map_with_path(pick, opt_abstract)

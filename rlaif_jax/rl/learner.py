"""The A2C learner on the shared train loop: rollout scoring, targets and the update.

Shapes: N rollouts (prompts × samples), Lp prompt length, T new tokens, L = Lp + T.

The trainable state is an `RLState` (a `train.train_state.TrainState` plus running reward
statistics) whose params are `{"policy", "value"}` under one optimizer per part
(`per_part_optimizer`): each part clips its own gradient norm, so the value loss (however
scaled) never rescales the policy's update, and the optimizer state is a dict by part, so
either part can be stepped alone. The frozen anchor (SFT) is passed separately and has
no optimizer state.

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

Placement (`rl.placement`, issue 21.2): the value model and the anchor may sit on devices
of their own (`value_side` / `anchor_side`: a mesh and rules over other devices than the
learner's). Each step function is then ONE function over whichever parts it is given,
jitted once per device set: the score pass runs on the learner's devices for the policy,
on the value's for the value model and on the anchor's for the anchor; the update steps
the policy and the value apart (their losses share no parameter: the parts' gradients and
per-part clipping are those of the joint step). Batch fields, values, anchor log-probs and
returns move between the device sets with `jax.device_put` (`sharding.placement.reshard`).
Colocated (the default) every function is the single jit it always was.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from rlaif_jax.models.lora import LoRAConfig
from rlaif_jax.rl import a2c, rollout
from rlaif_jax.rl.policy_value import PolicyValue
from rlaif_jax.sharding import partition
from rlaif_jax.sharding import placement as placement_lib
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
# The batch fields a teacher-forced pass reads (what moves to a role's own devices).
SCORE_FIELDS = ("prompt_tokens", "prompt_lengths", "response_tokens", "response_mask")


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
    # The jitted programs by device set, for `rl.plan` to compile on abstract inputs:
    # 'score' (params, [anchor,] batch) and 'update' (state, batch[, anchor]) on the
    # learner's devices; placed apart, 'value_score' ({'value'}, batch) / 'value_update'
    # (value state, batch) on the value's and 'anchor_score' ({}, anchor, batch) on the
    # anchor's.
    programs: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)


def per_part_optimizer(
    make_part: Callable[[str], optax.GradientTransformation],
) -> optax.GradientTransformation:
    """The RL optimizer: `make_part(part)` for each of policy and value, clipped apart.

    Its state is `{part: that part's optimizer state}` over `{part: params[part]}` (the
    moments keep the part's key in their paths, so `train_state.opt_state_shardings`
    lays them out like the params), and it takes params of any subset of the parts: a
    part on devices of its own is initialised and stepped alone with the same numbers.
    (`train_state.per_part_optimizer`'s multi_transform state interleaves the parts.)"""
    txs = {part: make_part(part) for part in PARTS}

    def check(params):
        unknown = sorted(set(params) - set(txs))
        if unknown:
            raise ValueError(f"per_part_optimizer: params parts {unknown} not in {list(PARTS)}.")

    def init(params):
        check(params)
        return {k: txs[k].init({k: v}) for k, v in params.items()}

    def update(updates, state, params=None):
        check(updates)
        out, new = {}, {}
        for k in updates:
            p = None if params is None else {k: params[k]}
            u, new[k] = txs[k].update({k: updates[k]}, state[k], p)
            out[k] = u[k]
        return out, new

    return optax.GradientTransformation(init, update)


def create_state(
    params: PyTree,
    param_shardings: PyTree,
    tx,
    mesh: Mesh,
    seed: int,
    value_mesh: Mesh | None = None,
):
    """(RLState, its shardings), born sharded; its rng is PRNGKey(seed), so step s of a
    run samples with fold_in(PRNGKey(seed), s) whether or not it resumed.

    value_mesh: the value model's own mesh (its params already there, `param_shardings`
    saying so): the value part's params and optimizer state are born on it, the rest on
    `mesh`. One RLState either way (one checkpoint); its leaves span both device sets."""
    make = functools.partial(
        train_state.create_sharded_state,
        tx=tx,
        seed=seed,
        state_cls=RLState,
        reward_stats=a2c.RunningStats.zeros(),
    )
    if value_mesh is None:
        return make(params, param_shardings, mesh=mesh)
    parts = [
        make({k: params[k]}, {k: param_shardings[k]}, mesh=m)
        for k, m in (("policy", mesh), ("value", value_mesh))
    ]
    (pol, pol_sh), (val, val_sh) = parts

    def merged(a, b):
        return a.replace(params={**a.params, **b.params}, opt_state={**a.opt_state, **b.opt_state})

    return merged(pol, val), merged(pol_sh, val_sh)


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
        # A part missing from `params` (stepped on its own devices) adds no term.
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
        if values is not None:
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
    value_side: Any = None,
    anchor_side: Any = None,
) -> Learner:
    """Jitted functions over an RLState laid out as `state_shardings` (`create_state`).

    `param_shardings = {"policy": ..., "value": ...}` (NamedSharding trees; the layouts
    of `policy_value`: `lora` and `value_on_policy_trunk` say which);
    `rows` of every batch are sharded over ('data', 'fsdp'). A `batch` dict holds
    prompt_tokens [N, Lp], prompt_lengths [N], response_tokens / response_mask /
    sampler_logprobs (T = 1) [N, T], scores [N]; scoring adds logprobs /
    anchor_logprobs / values [N, T], targets add returns / advantages [N, T] and
    batch_tokens [N].

    value_side / anchor_side (objects with `.mesh` and `.rules`, e.g. `rl.plan.Side`;
    None = the learner's): a role on other devices than `mesh` runs its passes there
    (module docstring); `param_shardings["value"]` / `anchor_shardings` then lie on
    them. Neither may leave the learner's devices with LoRA (the anchor is the adapters'
    base) nor the value with `value_on_policy_trunk` (it is a head on the policy).
    """
    value_apart = _apart(value_side, mesh)
    anchor_apart = _apart(anchor_side, mesh)
    if (value_apart or anchor_apart) and lora is not None:
        raise ValueError(
            "rl.placements: with LoRA the anchor is the frozen base of the policy and value "
            "adapters, so the value and the anchor stay on the policy's devices."
        )
    if value_apart and value_on_policy_trunk:
        raise ValueError(
            "rl.placements['value'].devices: with value_on_policy_trunk the value is a head "
            "on the policy's trunk and runs on the policy's devices."
        )
    # P(('data', 'fsdp')) shards the leading dim of 1-D and 2-D batch arrays alike.
    rows = partition.batch_sharding(mesh, 1)
    rep = partition.replicated(mesh)

    forward = PolicyValue(policy_model, value_model, lora, value_on_policy_trunk)

    def score(params, anchor, batch):
        """{logprobs (params has 'policy'), values ('value'), anchor_logprobs (anchor is
        not None)}, each [N, T] and masked."""
        packed = _packed(batch, pad_id)
        tokens = batch["response_tokens"]
        mask = batch["response_mask"].astype(jnp.float32)
        policy_lp, _, values = forward.outputs(params, anchor, packed, tokens)
        out = {"logprobs": policy_lp, "values": values}
        if anchor is not None:
            out["anchor_logprobs"] = forward.anchor_logprobs(anchor, packed, tokens)
        return {k: v * mask for k, v in out.items() if v is not None}

    def targets(reward_stats: a2c.RunningStats, batch):
        scores = batch["scores"].astype(jnp.float32)
        mask = batch["response_mask"].astype(jnp.float32)
        stats = reward_stats
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
        return stats, new, metrics

    loss_fn = make_loss_fn(
        policy_model, value_model, hyper, pad_id, microbatches, lora, value_on_policy_trunk
    )

    def update(state, batch, frozen=None):
        # The frozen base is an argument (not a closed-over constant): bound inside the jit.
        bound = functools.partial(loss_fn, frozen=frozen)
        parts = tuple(p for p in PARTS if p in state.params)
        return loop.make_train_step(bound, microbatches, part_grad_norms=parts)(state, batch)

    st = state_shardings
    learner_parts = ("policy",) if value_apart else PARTS
    main_params = _parts(param_shardings, learner_parts)
    main_state = _sub_state(st, learner_parts)
    if lora is None:  # nothing frozen is read: the anchor stays out of the program
        update_in, update_fn = (main_state, rows), update
    else:
        update_in, update_fn = (main_state, rows, anchor_shardings), update
    jitted_update = _with_rules(
        partition.jit_sharded(update_fn, update_in, (main_state, rep), donate_argnums=0),
        mesh,
        rules,
    )
    if anchor_apart:
        main_score = partition.jit_sharded(
            lambda params, batch: score(params, None, batch), (main_params, rows), rows
        )
    else:
        main_score = partition.jit_sharded(score, (main_params, anchor_shardings, rows), rows)
    main_score = _with_rules(main_score, mesh, rules)

    value_score = value_update = anchor_score = None
    if value_apart:
        v_rows = partition.batch_sharding(value_side.mesh, 1)
        v_state = _sub_state(st, ("value",), partition.replicated(value_side.mesh))
        v_params = _parts(param_shardings, ("value",))
        value_score = _with_rules(
            partition.jit_sharded(
                lambda params, batch: score(params, None, batch), (v_params, v_rows), v_rows
            ),
            value_side.mesh,
            value_side.rules,
        )
        value_update = _with_rules(
            partition.jit_sharded(
                update, (v_state, v_rows), (v_state, partition.replicated(value_side.mesh)),
                donate_argnums=0,
            ),
            value_side.mesh,
            value_side.rules,
        )  # fmt: skip
    if anchor_apart:
        a_rows = partition.batch_sharding(anchor_side.mesh, 1)
        anchor_score = _with_rules(
            partition.jit_sharded(score, ({}, anchor_shardings, a_rows), a_rows),
            anchor_side.mesh,
            anchor_side.rules,
        )

    def run_score(params, anchor, batch):
        fields = {k: batch[k] for k in SCORE_FIELDS}
        # The phases on other devices are dispatched first: they run while the learner's does.
        apart = {}
        if anchor_apart:
            moved = placement_lib.reshard(fields, a_rows)
            apart.update(anchor_score({}, anchor, moved))
        if value_apart:
            moved = placement_lib.reshard(fields, v_rows)
            apart.update(value_score({"value": params["value"]}, moved))
        main = _parts(params, learner_parts)
        out = main_score(main, batch) if anchor_apart else main_score(main, anchor, batch)
        out.update(placement_lib.reshard(apart, rows))
        return out["logprobs"], out["anchor_logprobs"], out["values"]

    jitted_targets = _with_rules(
        partition.jit_sharded(
            targets, (st.reward_stats, rows), (st.reward_stats, rows, rep), donate_argnums=0
        ),
        mesh,
        rules,
    )

    def run_targets(state: RLState, batch):
        stats, new, metrics = jitted_targets(state.reward_stats, batch)
        return state.replace(reward_stats=stats), new, metrics

    def run_update(state, batch, anchor=None):
        if lora is not None and anchor is None:
            raise ValueError("a LoRA learner's update_fn needs the frozen base (the anchor).")
        args = () if lora is None else (anchor,)
        if not value_apart:
            return jitted_update(state, batch, *args)
        policy, value = _sub_state(state, ("policy",)), _sub_state(state, ("value",))
        # The shared fields (step, rng, reward stats) go along as copies on the value's devices.
        value = placement_lib.reshard(value, v_state)
        value, m_value = value_update(value, placement_lib.reshard(batch, v_rows))
        policy, m_policy = jitted_update(policy, batch, *args)
        state = policy.replace(
            params={**policy.params, **value.params},
            opt_state={**policy.opt_state, **value.opt_state},
        )
        return state, _joint_metrics(jax.device_get(m_policy), jax.device_get(m_value))

    programs = {
        "score": main_score,
        "update": jitted_update,
        "value_score": value_score,
        "value_update": value_update,
        "anchor_score": anchor_score,
    }
    return Learner(
        score_fn=run_score,
        targets_fn=run_targets,
        update_fn=run_update,
        state_shardings=st,
        programs={k: v for k, v in programs.items() if v is not None},
    )


def _apart(side: Any, mesh: Mesh) -> bool:
    """Whether a role's side (None = the learner's) lies on other devices than `mesh`."""
    return side is not None and not placement_lib.same_devices(side.mesh, mesh)


def _with_rules(fn: Callable[..., Any], mesh: Mesh, rules: Rules) -> Callable[..., Any]:
    def call(*args):
        with partition.sharding_context(mesh, rules):
            return fn(*args)

    return call


def _parts(tree: Mapping[str, Any], parts: tuple[str, ...]) -> dict[str, Any]:
    return {k: tree[k] for k in parts if k in tree}


def _sub_state(state: RLState, parts: tuple[str, ...], shared: Any = None) -> RLState:
    """`state` (or its shardings) with only `parts` of params and optimizer state;
    `shared` (a sharding) replaces the step, rng and reward statistics."""
    sub = state.replace(
        params=_parts(state.params, parts), opt_state=_parts(state.opt_state, parts)
    )
    if shared is None:
        return sub
    return sub.replace(
        step=shared, rng=shared, reward_stats=jax.tree.map(lambda _: shared, sub.reward_stats)
    )


def _joint_metrics(policy: dict, value: dict) -> dict:
    """The metrics of the joint step from the policy's and the value's own steps: the
    total loss is their sum, the global gradient norm the root of their squares' sum."""
    out = {**value, **policy}
    out["loss"] = np.float32(policy["loss"]) + np.float32(value["loss"])
    out["grad_norm"] = np.sqrt(
        np.square(np.float32(policy["grad_norm"])) + np.square(np.float32(value["grad_norm"]))
    )
    return out

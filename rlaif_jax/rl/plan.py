"""The RL stage's memory plan: its roles and compiled steps, before anything is loaded.

Roles: policy and value (trainable: params + optimizer state, one `RLState`), anchor
(frozen SFT, `anchor_dtype`), and the reward role: a reward model (RLAIF / RLHF) or the
labeler (d-RLAIF), on the learner's devices or its own (`RolePlacement`). Phases: the
sampler (its KV cache), teacher-forced scoring of policy / anchor / value, the A2C
update, and the reward model's or labeler's scoring call. Every phase is the very jitted
function the stage runs (`learner.make_learner`, `decoding.sample.make_sampler`,
`rewards.make_rm_score_fn`), compiled on `jax.ShapeDtypeStruct`s: nothing is allocated.

Shapes: N = batch_size · samples_per_prompt rollouts, Lp prompt tokens (max_context),
T response tokens (max_response), B rows of a reward call, L its length.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlaif_jax.models import transformer
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.rl import a2c
from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.sharding import axes as ax
from rlaif_jax.sharding import memory, model_params, partition, placement
from rlaif_jax.train import state as train_state

PyTree = Any
logger = logging.getLogger("rlaif_jax.rl")


@dataclasses.dataclass(frozen=True)
class Side:
    """A mesh and rules table the plan lays roles out on (concrete: compiled phases)."""

    mesh: Any
    rules: Any
    offset: int = 0  # first device id of an abstract mesh

    @property
    def devices(self) -> tuple[int, ...]:
        return placement.mesh_device_ids(self.mesh, self.offset)

    @property
    def concrete(self) -> bool:
        return isinstance(self.mesh, jax.sharding.Mesh)


# Plans of many layouts (docs/scaling.md) trace the same model once per mesh and rules.
_abstract_params = functools.lru_cache(maxsize=32)(model_params.abstract_params)


def _rows(side: Side, shape: tuple[int, ...], dtype) -> jax.ShapeDtypeStruct:
    sharding = partition.batch_sharding(side.mesh, len(shape))
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def _kv_cache_bytes(config: ModelConfig, side: Side, rows: int, slots: int) -> int:
    """Per-device bytes of a KV cache: per layer (k, v) [rows, slots, K, Dh] with rows over
    the batch axes and K over whatever ACT_KV_HEADS maps to."""
    struct = jax.ShapeDtypeStruct((rows, slots, config.num_kv_heads, config.head_dim), config.dtype)
    spec = partition.logical_to_spec(
        (ax.ACT_BATCH, ax.CACHE_LENGTH, ax.ACT_KV_HEADS, ax.ACT_HEAD_DIM), side.rules
    )
    sharded = jax.ShapeDtypeStruct(
        struct.shape, struct.dtype, sharding=jax.sharding.NamedSharding(side.mesh, spec)
    )
    return 2 * config.num_layers * memory.leaf_bytes_per_device(sharded)


def _phase(name, roles, side, fn, args, resident, kv=0, donate=(), analytic=None, compile=True):
    """One PhaseMemory: compiled when the side is concrete and `compile`, else analytic."""
    if compile and side.concrete:
        try:
            m = memory.compiled_memory(fn, *args, donate_argnums=donate)
        except Exception as e:  # noqa: BLE001  a plan must not stop a run the estimate allows
            logger.warning("memory plan: %s did not compile on abstract inputs (%s); "
                           "using the analytic estimate", name, e)  # fmt: skip
        else:
            io = max(0, m.argument + m.output - m.alias - resident)
            return memory.PhaseMemory(name, roles, side.devices, m.temp, io, kv, "compiled")
    temp, io = analytic()
    return memory.PhaseMemory(name, roles, side.devices, temp, io, kv, "analytic")


def _analytic_forward(config: ModelConfig, rows: int, length: int, logits_rows: int) -> int:
    """Temporaries of a no-grad forward on one device: a layer's activations at a time
    (residual, q/k/v, attention scores, MLP) and f32 logits where they are read."""
    act = np.dtype(config.dtype).itemsize
    d, f, h, dh = config.d_model, config.mlp_dim, config.num_heads, config.head_dim
    per_layer = rows * length * (4 * d + 2 * h * dh + 3 * f) * act
    scores = rows * h * length * length * 4
    return per_layer + scores + 3 * logits_rows * config.vocab_size * 4


def _analytic_backward(config: ModelConfig, rows: int, length: int, t: int, grads: int) -> int:
    """Temporaries of a train step on one device: saved activations of every layer
    (remat 'full': only each layer's input), one layer's working set, the logits and
    their gradient in f32, and the gradients (`grads`, the trainable params' bytes)."""
    act = np.dtype(config.dtype).itemsize
    d, f, h, dh = config.d_model, config.mlp_dim, config.num_heads, config.head_dim
    layer = rows * length * (6 * d + 4 * h * dh + 4 * f) * act + rows * h * length * length * 4
    saved = rows * length * d * act if config.remat == "full" else layer
    logits = 3 * rows * t * config.vocab_size * 4
    return config.num_layers * saved + layer + logits + grads


def _gathered(config: ModelConfig, side: Side, layer_dtype: Any, train: bool = False) -> int:
    """Weights a sharded step gathers whole on each device (FSDP / TP all-gathers): the
    embedding table in the compute dtype, two layers' weights in `layer_dtype` (one in
    use, one prefetched) and, in a train step, the embedding's full f32 gradient before
    its reduce-scatter. 0 when the params are replicated (nothing to gather). Fitted to
    memory_analysis() of the CPU-compiled steps (`rl.scaling.calibration`)."""
    from rlaif_jax.models.config import num_params

    emb, _ = _abstract_params(config, side.mesh, side.rules, "scalar")
    full = num_params(config, "scalar") * np.dtype(config.param_dtype).itemsize
    if memory.tree_bytes_per_device(emb) >= full:
        return 0
    v, d = config.vocab_size, config.d_model
    layer = (num_params(config, "scalar") - v * d - d) // config.num_layers
    out = v * d * np.dtype(config.dtype).itemsize + 2 * layer * np.dtype(layer_dtype).itemsize
    return out + (v * d * 4 if train else 0)


def plan_rl(
    config: ModelConfig,
    settings: Any,
    max_context: int,
    max_response: int,
    learner: Side,
    tx: Any,
    reward: memory.ScoringRoleSpec | None = None,
    reward_side: Side | None = None,
    value_config: ModelConfig | None = None,
    anchor_dtype: str | None = None,
    anchor_rules: Any = None,
    capacity: int | None = None,
    headroom: float = 0.9,
    compile: bool = True,
    device_label: str = "",
) -> memory.MemoryPlan:
    """The RL stage's MemoryPlan for policy `config` with `settings` (RLSettings) on the
    `learner` side (policy, value, anchor) and the reward role on `reward_side` (None:
    the learner's); `reward.config.param_dtype` is its storage dtype. anchor_dtype (None =
    settings.anchor_dtype) / anchor_rules (None = the learner's) as the anchor is stored.
    compile: phases from memory_analysis of the compiled steps (needs
    concrete meshes), else the analytic estimate."""
    value_config = value_config or config
    reward_side = reward_side or learner
    mesh, rules = learner.mesh, learner.rules
    lm, lm_sh = _abstract_params(config, mesh, rules, "lm")
    scalar, scalar_sh = _abstract_params(value_config, mesh, rules, "scalar")
    anchor_dtype = anchor_dtype or settings.anchor_dtype
    anchor = lm
    if anchor_rules is not None:
        anchor, _ = _abstract_params(config, mesh, anchor_rules, "lm")
    anchor = memory.with_dtype(anchor, anchor_dtype)
    params = {"policy": lm, "value": scalar}
    param_sh = {"policy": lm_sh, "value": scalar_sh}
    abstract, state_sh, _ = train_state.sharded_state_layout(
        params,
        param_sh,
        tx,
        mesh,
        settings.seed,
        state_cls=learner_lib.RLState,
        reward_stats=a2c.RunningStats.zeros(),
    )
    state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh
    )
    policy_bytes = memory.tree_bytes_per_device(lm)
    value_bytes = memory.tree_bytes_per_device(scalar)
    dev = learner.devices
    roles = [
        memory.RoleMemory("policy", dev, policy_bytes, _part_bytes(state.opt_state, "policy")),
        memory.RoleMemory("value", dev, value_bytes, _part_bytes(state.opt_state, "value")),
        memory.RoleMemory("anchor", dev, memory.tree_bytes_per_device(anchor), 0, anchor_dtype),
    ]

    n = settings.batch_size * settings.samples_per_prompt
    lp, t = max_context, max_response
    div = partition.batch_size_divisor(mesh)
    local_n, local_b = max(n // div, 1), max(settings.batch_size // div, 1)
    batch = {
        "prompt_tokens": _rows(learner, (n, lp), jnp.int32),
        "prompt_lengths": _rows(learner, (n,), jnp.int32),
        "response_tokens": _rows(learner, (n, t), jnp.int32),
        "response_mask": _rows(learner, (n, t), jnp.bool_),
        "sampler_logprobs": _rows(learner, (n, t), jnp.float32),
        "scores": _rows(learner, (n,), jnp.float32),
    }
    policy_model = transformer.Transformer(config, head="lm")
    value_model = transformer.Transformer(value_config, head="scalar")
    lrn = (
        learner_lib.make_learner(
            policy_model,
            value_model,
            settings.hyper,
            mesh,
            rules,
            state_sh,
            param_sh,
            jax.tree.map(lambda x: x.sharding, anchor),
            pad_id=0,
            normalize_rewards=settings.normalize_rewards,
            microbatches=settings.microbatches,
        )
        if learner.concrete
        else None
    )
    kv = _kv_cache_bytes(config, learner, n, lp + t)
    policy_dev = policy_bytes
    phases = [
        _phase(
            "sample",
            ("policy",),
            learner,
            _sampler(config, learner, settings, t) if learner.concrete else None,
            (
                lm,
                _rows(learner, (settings.batch_size, lp), jnp.int32),
                _rows(learner, (settings.batch_size,), jnp.int32),
                _key(learner),
            ),
            policy_dev,
            kv=kv,
            analytic=lambda: (
                kv
                + policy_bytes // 2
                + _analytic_forward(config, local_b, lp, local_n)
                + _gathered(config, learner, config.dtype),
                0,
            ),
            compile=compile,
        ),
        _phase(
            "score",
            ("policy", "anchor", "value"),
            learner,
            lrn.score_fn if lrn else None,
            (params, anchor, batch),
            policy_dev + value_bytes + memory.tree_bytes_per_device(anchor),
            analytic=lambda: (
                3 * _analytic_forward(config, local_n, lp + t, local_n * t) // 2
                + _gathered(config, learner, config.param_dtype),
                local_n * (2 * lp + 4 * t) * 4,
            ),
            compile=compile,
        ),
    ]
    update_batch = {k: batch[k] for k in ("prompt_tokens", "prompt_lengths", "response_tokens")}
    update_batch.update(
        response_mask=batch["response_mask"],
        returns=_rows(learner, (n, t), jnp.float32),
        advantages=_rows(learner, (n, t), jnp.float32),
        batch_tokens=_rows(learner, (n,), jnp.float32),
    )
    micro = max(local_n // settings.microbatches, 1)
    phases.append(
        _phase(
            "update",
            ("policy", "value"),
            learner,
            lrn.update_fn if lrn else None,
            (state, update_batch),
            memory.tree_bytes_per_device(state),
            donate=(0,),
            analytic=lambda: (
                _analytic_backward(config, micro, lp + t, t, policy_bytes)
                + _analytic_backward(value_config, micro, lp + t, 0, value_bytes)
                + _gathered(config, learner, config.param_dtype, train=True),
                local_n * (2 * lp + 4 * t) * 4,
            ),
            compile=compile,
        )
    )
    if reward is not None:
        roles_r, phase_r = _reward_rows(reward, reward_side, compile)
        roles.append(roles_r)
        phases.append(phase_r)
    return memory.MemoryPlan(
        stage="rl",
        roles=tuple(roles),
        phases=tuple(phases),
        capacity=capacity,
        headroom=headroom,
        device_label=device_label,
    )


def _part_bytes(tree: PyTree, part: str) -> int:
    """Per-device bytes of the leaves of `tree` under the key `part` (an optimizer state
    of `learner.per_part_optimizer`: each part's moments sit under its name)."""
    key = f"'{part}'"
    return sum(
        memory.leaf_bytes_per_device(x)
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
        if key in jax.tree_util.keystr(path)
    )


def _key(side: Side) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=partition.replicated(side.mesh))


def _sampler(config: ModelConfig, side: Side, settings: Any, max_new: int):
    from rlaif_jax.decoding import sample

    return sample.make_sampler(
        config,
        side.mesh,
        side.rules,
        max_new_tokens=max_new,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        eos_id=(1,),
        pad_id=0,
        num_samples=settings.samples_per_prompt,
    )


def _reward_rows(spec: memory.ScoringRoleSpec, side: Side, compile: bool):
    """(RoleMemory, PhaseMemory) of the reward model or labeler on `side`."""
    from rlaif_jax.decoding import score
    from rlaif_jax.rl import rewards

    config = spec.config
    structs, shardings = _abstract_params(config, side.mesh, side.rules, spec.head)
    params = memory.tree_bytes_per_device(structs)
    b, length = spec.batch_size, spec.length
    local = max(b // partition.batch_size_divisor(side.mesh), 1)
    tokens = _rows(side, (b, length), jnp.int32)
    lengths = _rows(side, (b,), jnp.int32)
    if spec.head == "scalar":
        fn = (
            rewards.make_rm_score_fn(config, side.mesh, side.rules, shardings)
            if side.concrete
            else None
        )
        args = (structs, tokens, lengths)
    else:
        rep = jax.ShapeDtypeStruct((2,), jnp.int32, sharding=partition.replicated(side.mesh))

        def fn(p, tok, lens, cands):
            with partition.sharding_context(side.mesh, side.rules):
                return score.candidate_distribution(config, p, tok, lens, cands)[1]

        args = (structs, tokens, lengths, rep)
    role = memory.RoleMemory(spec.role, side.devices, params, 0, config.param_dtype)
    phase = _phase(
        spec.role,
        (spec.role,),
        side,
        fn,
        args,
        params,
        analytic=lambda: (
            _analytic_forward(config, local, length, local)
            + _gathered(config, side, config.param_dtype),
            0,
        ),
        compile=compile,
    )
    return role, phase


def plan_scoring(
    stage: str,
    spec: memory.ScoringRoleSpec,
    side: Side,
    capacity: int | None = None,
    headroom: float = 0.9,
    compile: bool = True,
    label: str = "",
) -> memory.MemoryPlan:
    """The plan of a stage that holds one frozen scoring role (the label stage's labeler)."""
    role, phase = _reward_rows(spec, side, compile)
    return memory.MemoryPlan(stage, (role,), (phase,), capacity, headroom, label)

"""The RL stage's memory plan: its roles and compiled steps, before anything is loaded.

Roles: policy and value (trainable: params + optimizer state, one `RLState`), anchor
(frozen SFT, `anchor_dtype`), and the reward role: a reward model (RLAIF / RLHF) or the
labeler (d-RLAIF), on the learner's devices or its own (`RolePlacement`). Phases: the
sampler (its KV cache), teacher-forced scoring of policy / anchor / value, the A2C
update, and the reward model's or labeler's scoring call. Every phase is the very jitted
function the stage runs (`learner.make_learner`, `decoding.sample.make_sampler`,
`decoding.score`), compiled on `jax.ShapeDtypeStruct`s: nothing is allocated. The
helpers (sides, phases, analytic estimates) are `sharding.phase_memory`'s, shared with
every other stage's plan.

LoRA (`lora`, `rl.policy_value`'s layouts): policy and value are adapters (and the
value's head) with optimizer state over those only; the anchor is the frozen base of
both (no second copy); sampling merges the adapters into the base's kernels
(`policy_value.lora_sampler`), a transient copy of the adapted kernels in the compute
dtype counted in the sample phase. `value_on_policy_trunk`: the value is a head only.

Shapes: N = batch_size · samples_per_prompt rollouts, Lp prompt tokens (max_context),
T response tokens (max_response), B rows of a reward call, L its length.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp

from rlaif_jax.models import lora as lora_lib
from rlaif_jax.models import transformer
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.rl import a2c
from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.sharding import memory, partition, phase_memory
from rlaif_jax.sharding import placement as placement_lib
from rlaif_jax.sharding.phase_memory import Side
from rlaif_jax.train import state as train_state

PyTree = Any
logger = logging.getLogger("rlaif_jax.rl")

__all__ = ["Side", "plan_rl", "plan_scoring", "trainable_structs"]


def trainable_structs(
    config: ModelConfig,
    value_config: ModelConfig,
    side: Side,
    lora: lora_lib.LoRAConfig | None = None,
    value_on_policy_trunk: bool = False,
) -> tuple[PyTree, PyTree]:
    """(ShapeDtypeStructs, shardings) of the learner's `params = {"policy", "value"}` in
    the layout `rl.policy_value.init_trainable` builds (full copies, adapters, or a head
    on the policy's trunk), allocating nothing."""
    mesh, rules = side.mesh, side.rules
    lm, lm_sh = phase_memory.abstract_params(config, mesh, rules, "lm")
    scalar, scalar_sh = phase_memory.abstract_params(value_config, mesh, rules, "scalar")
    if lora is None and not value_on_policy_trunk:
        return {"policy": lm, "value": scalar}, {"policy": lm_sh, "value": scalar_sh}
    head = {"score_head": scalar["score_head"]}
    head_sh = {"score_head": scalar_sh["score_head"]}
    if lora is None:
        return {"policy": lm, "value": head}, {"policy": lm_sh, "value": head_sh}
    adapters, adapters_sh = partition.abstract_params(
        lora_lib.init_fn(config, lora), mesh, rules, jax.random.key(0)
    )
    params = {"policy": adapters, "value": dict(head)}
    shardings = {"policy": adapters_sh, "value": dict(head_sh)}
    if not value_on_policy_trunk:
        params["value"]["adapters"] = adapters
        shardings["value"]["adapters"] = adapters_sh
    return params, shardings


def _merged(anchor: PyTree, adapters: PyTree, dtype: Any) -> tuple[PyTree, int]:
    """(the tree the LoRA sampler reads: the anchor with every adapted kernel replaced by
    a merged one in the compute `dtype`, bytes per device of those merged kernels)."""
    kernels = lora_lib.kernel_shardings(anchor, adapters)
    base = {
        layer: {
            parent: {t: anchor[layer][parent][t]["kernel"] for t in projs}
            for parent, projs in mods.items()
        }
        for layer, mods in kernels.items()
    }
    merged = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, jnp.dtype(dtype), sharding=x.sharding), base
    )
    return lora_lib.with_kernels(anchor, merged), memory.tree_bytes_per_device(merged)


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
    lora: lora_lib.LoRAConfig | None = None,
    value_on_policy_trunk: bool = False,
    value_side: Side | None = None,
    anchor_side: Side | None = None,
    offload: tuple[str, ...] = (),
) -> memory.MemoryPlan:
    """The RL stage's MemoryPlan for policy `config` with `settings` (RLSettings) on the
    `learner` side (policy; value and anchor unless placed apart) and the reward role on
    `reward_side` (None: the learner's); `reward.config.param_dtype` is its storage dtype.
    anchor_dtype (None = settings.anchor_dtype) / anchor_rules (None = the learner's) as
    the anchor is stored. lora / value_on_policy_trunk: the trainable layout
    (`rl.policy_value`; the stage's `rl.lora` / `rl.value_on_policy_trunk`).
    value_side / anchor_side (`rl.placement.RLPlacement.value` / `.anchor`): a role on
    other devices than the learner's holds its params (the value: and its optimizer
    state) there and runs its own phases there (`learner.make_learner`'s programs).
    offload: the roles ('value', 'anchor', 'reward') kept in host memory between their
    phases (on a backend with a host memory kind: each is resident only while its own
    phases run). compile: phases from memory_analysis of the compiled steps (needs
    concrete meshes), else the analytic estimate."""
    value_config = value_config or config
    reward_side = reward_side or learner
    vside = value_side if _apart(value_side, learner) else None
    aside = anchor_side if _apart(anchor_side, learner) else None
    mesh, rules = learner.mesh, learner.rules
    anchor_dtype = anchor_dtype or settings.anchor_dtype
    a = aside or learner
    anchor, _ = phase_memory.abstract_params(
        config, a.mesh, a.rules if aside else anchor_rules or rules, "lm"
    )
    anchor = memory.with_dtype(anchor, anchor_dtype)
    params, param_sh = trainable_structs(config, value_config, learner, lora, value_on_policy_trunk)
    if vside is not None:  # born on its own devices (`learner.create_state(value_mesh=)`)
        params["value"], param_sh["value"] = phase_memory.abstract_params(
            value_config, vside.mesh, vside.rules, "scalar"
        )
    main_parts = ("policy",) if vside else ("policy", "value")
    state, state_sh = _state_structs(params, param_sh, main_parts, tx, learner, settings.seed)
    value_state = None
    if vside is not None:
        value_state, value_sh = _state_structs(
            params, param_sh, ("value",), tx, vside, settings.seed
        )
        state_sh = state_sh.replace(
            params={**state_sh.params, **value_sh.params},
            opt_state={**state_sh.opt_state, **value_sh.opt_state},
        )
    policy_bytes = memory.tree_bytes_per_device(params["policy"])
    value_bytes = memory.tree_bytes_per_device(params["value"])
    anchor_bytes = memory.tree_bytes_per_device(anchor)
    value_opt = _part_bytes((value_state or state).opt_state, "value")
    kind = "LoRA adapters" if lora is not None else ""
    roles = [
        memory.RoleMemory(
            "policy", learner.devices, policy_bytes, _part_bytes(state.opt_state, "policy"), kind
        ),
        memory.RoleMemory(
            "value", (vside or learner).devices, value_bytes, value_opt,
            "head on the policy trunk" if value_on_policy_trunk else kind,
            _offloaded("value", offload, vside or learner),
        ),
        memory.RoleMemory(
            "anchor", a.devices, anchor_bytes, 0,
            anchor_dtype + (", the frozen base of policy and value" if lora else ""),
            _offloaded("anchor", offload, a),
        ),
    ]  # fmt: skip

    n = settings.batch_size * settings.samples_per_prompt
    lp, t = max_context, max_response
    local_n = phase_memory.local_rows(learner, n)
    lrn = (
        learner_lib.make_learner(
            transformer.Transformer(config, head="lm"),
            transformer.Transformer(value_config, head="scalar"),
            settings.hyper,
            mesh,
            rules,
            state_sh,
            param_sh,
            jax.tree.map(lambda x: x.sharding, anchor),
            pad_id=0,
            normalize_rewards=settings.normalize_rewards,
            microbatches=settings.microbatches,
            lora=lora,
            value_on_policy_trunk=value_on_policy_trunk,
            value_side=vside,
            anchor_side=aside,
        )
        if compile and all(s.concrete for s in (learner, a, vside or learner))
        else None
    )
    programs = lrn.programs if lrn else {}
    # The sampler reads the policy: its own tree, or (LoRA) the anchor with merged kernels.
    sampled, merged_bytes = params["policy"], 0
    sampled_resident = policy_bytes
    if lora is not None:
        sampled, merged_bytes = _merged(anchor, params["policy"], config.dtype)
        sampled_resident = memory.tree_bytes_per_device(sampled) - merged_bytes
    sample = phase_memory.decode_phase(
        "sample", "policy", config, sampled, learner, settings.batch_size, lp, t,
        settings.samples_per_prompt, compile, temperature=settings.temperature,
        resident=sampled_resident, top_k=settings.top_k, top_p=settings.top_p,
    )  # fmt: skip
    if lora is not None:
        sample = _with_merged(sample, merged_bytes)
    trainable_full = lora is None and not value_on_policy_trunk
    main = {k: params[k] for k in main_parts}
    score_roles = main_parts + (() if aside else ("anchor",))
    forwards = 1 + (aside is None) + (vside is None and trainable_full)
    phases = [
        sample,
        phase_memory.phase(
            "score",
            score_roles,
            learner,
            programs.get("score"),
            (main, _score_batch(learner, n, lp, t)) if aside else
            (main, anchor, _score_batch(learner, n, lp, t)),
            memory.tree_bytes_per_device(main) + (0 if aside else anchor_bytes),
            analytic=lambda: (
                forwards * phase_memory.analytic_forward(config, local_n, lp + t, local_n * t)
                // 2
                + phase_memory.gathered(config, learner, config.param_dtype),
                local_n * (2 * lp + 4 * t) * 4,
            ),
            compile=compile,
        ),
    ]  # fmt: skip
    micro = max(local_n // settings.microbatches, 1)
    value_backward = 0 if vside else phase_memory.analytic_backward(
        value_config, micro, lp + t, 0, value_bytes
    )  # fmt: skip
    # The update reads the anchor too when it is the LoRA base (its bytes are resident).
    update_args = (state, _update_batch(learner, n, lp, t))
    update_args += (anchor,) if lora is not None else ()
    phases.append(
        phase_memory.phase(
            "update",
            main_parts,
            learner,
            programs.get("update"),
            update_args,
            memory.tree_bytes_per_device(state) + (anchor_bytes if lora is not None else 0),
            donate=(0,),
            analytic=lambda: (
                phase_memory.analytic_backward(config, micro, lp + t, t, policy_bytes)
                + value_backward
                + phase_memory.gathered(config, learner, config.param_dtype, train=True),
                local_n * (2 * lp + 4 * t) * 4,
            ),
            compile=compile,
        )
    )
    apart = []
    if vside is not None:
        apart += _value_phases(
            vside, value_config, programs, params["value"], value_state, settings, lp, t, compile
        )
    if aside is not None:
        apart.append(
            _anchor_phase(aside, config, anchor, anchor_dtype, programs, n, lp, t, compile)
        )
    phases += _concurrent_scores(apart)
    if reward is not None:
        role_r, phase_r = phase_memory.scoring_rows(reward, reward_side, compile)
        roles.append(
            dataclasses.replace(role_r, exclusive=_offloaded("reward", offload, reward_side))
        )
        phases.append(phase_r)
    return memory.MemoryPlan(
        stage="rl",
        roles=tuple(roles),
        phases=tuple(phases),
        capacity=capacity,
        headroom=headroom,
        device_label=device_label,
    )


def _apart(side: Side | None, learner: Side) -> bool:
    return side is not None and not placement_lib.same_devices(side.mesh, learner.mesh)


def _offloaded(role: str, offload: tuple[str, ...], side: Side) -> bool:
    """Whether `role` waits in host memory between its phases (resident for them only):
    asked for, and the side's backend has a host memory kind (else it stays on device)."""
    return (
        role in offload and side.concrete and placement_lib.host_memory_kind(side.mesh) is not None
    )


def _state_structs(
    params: PyTree, param_sh: PyTree, parts: tuple[str, ...], tx: Any, side: Side, seed: int
) -> tuple[Any, Any]:
    """(RLState of ShapeDtypeStructs, its shardings) over `parts` of the params on `side`,
    as `learner.create_state` lays each device set's part out."""
    abstract, shardings, _ = train_state.sharded_state_layout(
        {k: params[k] for k in parts},
        {k: param_sh[k] for k in parts},
        tx,
        side.mesh,
        seed,
        state_cls=learner_lib.RLState,
        reward_stats=a2c.RunningStats.zeros(),
    )
    structs = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
    )
    return structs, shardings


def _score_batch(
    side: Side, n: int, lp: int, t: int, moved: bool = False
) -> dict[str, jax.ShapeDtypeStruct]:
    """The rollout batch a score pass reads on `side` (N rows, Lp prompt, T response);
    `moved`: the fields that go to a role's own devices (`learner.SCORE_FIELDS`)."""
    rows = phase_memory.rows
    batch = {
        "prompt_tokens": rows(side, (n, lp), jnp.int32),
        "prompt_lengths": rows(side, (n,), jnp.int32),
        "response_tokens": rows(side, (n, t), jnp.int32),
        "response_mask": rows(side, (n, t), jnp.bool_),
        "sampler_logprobs": rows(side, (n, t), jnp.float32),
        "scores": rows(side, (n,), jnp.float32),
    }
    return {k: batch[k] for k in learner_lib.SCORE_FIELDS} if moved else batch


def _update_batch(side: Side, n: int, lp: int, t: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch an update reads on `side` (`learner.UPDATE_FIELDS`)."""
    batch = _score_batch(side, n, lp, t)
    batch.update(
        returns=phase_memory.rows(side, (n, t), jnp.float32),
        advantages=phase_memory.rows(side, (n, t), jnp.float32),
        batch_tokens=phase_memory.rows(side, (n,), jnp.float32),
    )
    return {k: batch[k] for k in learner_lib.UPDATE_FIELDS}


def _value_phases(
    side: Side,
    config: ModelConfig,
    programs: dict,
    value: PyTree,
    state: Any,
    settings: Any,
    lp: int,
    t: int,
    compile: bool,
) -> list[memory.PhaseMemory]:
    """The value model's score pass and update on its own devices."""
    n = settings.batch_size * settings.samples_per_prompt
    local = phase_memory.local_rows(side, n)
    micro = max(local // settings.microbatches, 1)
    value_bytes = memory.tree_bytes_per_device(value)
    forward = phase_memory.phase(
        "value score", ("value",), side, programs.get("value_score"),
        ({"value": value}, _score_batch(side, n, lp, t, moved=True)), value_bytes,
        analytic=lambda: (
            phase_memory.analytic_forward(config, local, lp + t, 0) // 2
            + phase_memory.gathered(config, side, config.param_dtype),
            local * (2 * lp + 2 * t) * 4,
        ),
        compile=compile,
    )  # fmt: skip
    update = phase_memory.phase(
        "value update", ("value",), side, programs.get("value_update"),
        (state, _update_batch(side, n, lp, t)), memory.tree_bytes_per_device(state),
        donate=(0,),
        analytic=lambda: (
            phase_memory.analytic_backward(config, micro, lp + t, 0, value_bytes)
            + phase_memory.gathered(config, side, config.param_dtype, train=True),
            local * (2 * lp + 4 * t) * 4,
        ),
        compile=compile,
    )  # fmt: skip
    return [forward, update]


def _anchor_phase(
    side: Side,
    config: ModelConfig,
    anchor: PyTree,
    dtype: str,
    programs: dict,
    n: int,
    lp: int,
    t: int,
    compile: bool,
) -> memory.PhaseMemory:
    """The anchor's teacher-forced score pass on its own devices."""
    local = phase_memory.local_rows(side, n)
    return phase_memory.phase(
        "anchor score", ("anchor",), side, programs.get("anchor_score"),
        ({}, anchor, _score_batch(side, n, lp, t, moved=True)),
        memory.tree_bytes_per_device(anchor),
        analytic=lambda: (
            phase_memory.analytic_forward(config, local, lp + t, local * t) // 2
            + phase_memory.gathered(config, side, dtype),
            local * (2 * lp + 4 * t) * 4,
        ),
        compile=compile,
    )  # fmt: skip


def _concurrent_scores(phases: list[memory.PhaseMemory]) -> list[memory.PhaseMemory]:
    """The value's and the anchor's score passes on the same devices as one phase: the
    learner dispatches both before either finishes, so their transients add up."""
    scores = [p for p in phases if p.phase in ("value score", "anchor score")]
    if len(scores) < 2 or set(scores[0].devices) != set(scores[1].devices):
        return phases
    v, a = scores
    both = memory.PhaseMemory(
        "value + anchor score", v.roles + a.roles, v.devices, v.temp + a.temp, v.io + a.io,
        v.kv_cache + a.kv_cache, v.source if v.source == a.source else "compiled + analytic",
    )  # fmt: skip
    return [both] + [p for p in phases if p not in scores]


def _with_merged(p: memory.PhaseMemory, merged: int) -> memory.PhaseMemory:
    """The LoRA sample phase: the merged kernels are its input, not resident (io; the
    compiled phase counts them already, the analytic one gets them here)."""
    return dataclasses.replace(p, io=max(p.io, merged))


def _part_bytes(tree: PyTree, part: str) -> int:
    """Per-device bytes of the leaves of `tree` under the key `part` (an optimizer state
    of `learner.per_part_optimizer`: each part's moments sit under its name)."""
    key = f"'{part}'"
    return sum(
        memory.leaf_bytes_per_device(x)
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
        if key in jax.tree_util.keystr(path)
    )


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
    role, phase = phase_memory.scoring_rows(spec, side, compile)
    return memory.MemoryPlan(stage, (role,), (phase,), capacity, headroom, label)

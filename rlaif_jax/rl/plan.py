"""The RL stage's memory plan: its roles and compiled steps, before anything is loaded.

Roles: policy and value (trainable: params + optimizer state, one `RLState`), anchor
(frozen SFT, `anchor_dtype`), and the reward role: a reward model (RLAIF / RLHF) or the
labeler (d-RLAIF), on the learner's devices or its own (`RolePlacement`). Phases: the
sampler (its KV cache), teacher-forced scoring of policy / anchor / value, the A2C
update, and the reward model's or labeler's scoring call. Every phase is the very jitted
function the stage runs (`learner.make_learner`'s programs, `decoding.sample.make_sampler`,
`decoding.score`), compiled on `jax.ShapeDtypeStruct`s (`rl.plan_inputs`): nothing is
allocated. The helpers (sides, phases, analytic estimates) are `sharding.phase_memory`'s,
shared with every other stage's plan.

Placement (`rl.placement`): a value model on devices of its own holds its params and
optimizer state there and runs its score pass and update there; an anchor on its own
holds its params (anchor_dtype) and runs its score pass there (with the value's on the
same devices: one phase, dispatched together); the learner's devices keep the policy, the
sampler, the policy's score pass and update. An offloaded role (host memory between its
passes, where the backend has a host memory kind) is resident only for its own phases.

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

from rlaif_jax.models import lora as lora_lib
from rlaif_jax.models import transformer
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.rl import plan_inputs
from rlaif_jax.rl.plan_inputs import trainable_structs
from rlaif_jax.sharding import memory, phase_memory
from rlaif_jax.sharding import placement as placement_lib
from rlaif_jax.sharding.phase_memory import Side

PyTree = Any
logger = logging.getLogger("rlaif_jax.rl")

__all__ = ["Side", "plan_rl", "plan_scoring", "trainable_structs"]


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
    params, param_sh = plan_inputs.trainable_structs(
        config, value_config, learner, lora, value_on_policy_trunk
    )
    if vside is not None:  # born on its own devices (`learner.create_state(value_mesh=)`)
        params["value"], param_sh["value"] = phase_memory.abstract_params(
            value_config, vside.mesh, vside.rules, "scalar"
        )
    main_parts = ("policy",) if vside else ("policy", "value")
    state, state_sh = plan_inputs.state_structs(
        params, param_sh, main_parts, tx, learner, settings.seed
    )
    value_state = None
    if vside is not None:
        value_state, value_sh = plan_inputs.state_structs(
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
        ),
        memory.RoleMemory(
            "anchor", a.devices, anchor_bytes, 0,
            anchor_dtype + (", the frozen base of policy and value" if lora else ""),
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
        sampled, merged_bytes = plan_inputs.merged_kernels(anchor, params["policy"], config.dtype)
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
            (main, plan_inputs.score_batch(learner, n, lp, t)) if aside else
            (main, anchor, plan_inputs.score_batch(learner, n, lp, t)),
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
    update_args = (state, plan_inputs.update_batch(learner, n, lp, t))
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
    phases += _apart_phases(
        vside, aside, programs, params, value_state, anchor, value_config, config,
        anchor_dtype, settings, lp, t, compile,
    )  # fmt: skip
    if reward is not None:
        role_r, phase_r = phase_memory.scoring_rows(reward, reward_side, compile)
        roles.append(role_r)
        phases.append(phase_r)
    sides = {"value": vside or learner, "anchor": a, "reward": reward_side}
    return memory.MemoryPlan(
        stage="rl",
        roles=tuple(_offloaded(r, offload, sides.get(r.role)) for r in roles),
        phases=tuple(phases),
        capacity=capacity,
        headroom=headroom,
        device_label=device_label,
    )


def _apart(side: Side | None, learner: Side) -> bool:
    return side is not None and not placement_lib.same_devices(side.mesh, learner.mesh)


def _offloaded(row: memory.RoleMemory, offload: tuple[str, ...], side: Side | None):
    """`row`, resident for its own phases only (`exclusive`) when its role waits in host
    memory between them: asked for (`offload`), and the side's backend has a host memory
    kind (else the role stays in device memory, as `rl.placement.place_roles` says)."""
    if row.role not in offload or side is None or not side.concrete:
        return row
    if placement_lib.host_memory_kind(side.mesh) is None:
        return row
    return dataclasses.replace(
        row, exclusive=True, exclusive_note="in host memory between its phases"
    )


def _apart_phases(
    vside: Side | None, aside: Side | None, programs: dict, params: PyTree, value_state: Any,
    anchor: PyTree, value_config: ModelConfig, config: ModelConfig, anchor_dtype: str,
    settings: Any, lp: int, t: int, compile: bool,
) -> list[memory.PhaseMemory]:  # fmt: skip
    """The value's score pass and update on its own devices (`vside`) and the anchor's
    score pass on its own (`aside`); both score passes on one device set are one phase
    (the learner dispatches them together)."""
    n = settings.batch_size * settings.samples_per_prompt
    scores, out = [], []
    if vside is not None:
        local, cfg = phase_memory.local_rows(vside, n), value_config
        micro = max(local // settings.microbatches, 1)
        value_bytes = memory.tree_bytes_per_device(params["value"])
        scores.append(
            phase_memory.phase(
                "value score",
                ("value",),
                vside,
                programs.get("value_score"),
                ({"value": params["value"]}, plan_inputs.score_batch(vside, n, lp, t, moved=True)),
                value_bytes,
                analytic=lambda: (
                    phase_memory.analytic_forward(cfg, local, lp + t, 0) // 2
                    + phase_memory.gathered(cfg, vside, cfg.param_dtype),
                    local * (2 * lp + 2 * t) * 4,
                ),
                compile=compile,
            )
        )
        out.append(
            phase_memory.phase(
                "value update",
                ("value",),
                vside,
                programs.get("value_update"),
                (value_state, plan_inputs.update_batch(vside, n, lp, t)),
                memory.tree_bytes_per_device(value_state),
                donate=(0,),
                analytic=lambda: (
                    phase_memory.analytic_backward(cfg, micro, lp + t, 0, value_bytes)
                    + phase_memory.gathered(cfg, vside, cfg.param_dtype, train=True),
                    local * (2 * lp + 4 * t) * 4,
                ),
                compile=compile,
            )
        )
    if aside is not None:
        a_local = phase_memory.local_rows(aside, n)
        scores.append(
            phase_memory.phase(
                "anchor score",
                ("anchor",),
                aside,
                programs.get("anchor_score"),
                ({}, anchor, plan_inputs.score_batch(aside, n, lp, t, moved=True)),
                memory.tree_bytes_per_device(anchor),
                analytic=lambda: (
                    phase_memory.analytic_forward(config, a_local, lp + t, a_local * t) // 2
                    + phase_memory.gathered(config, aside, anchor_dtype),
                    a_local * (2 * lp + 4 * t) * 4,
                ),
                compile=compile,
            )
        )
    if len(scores) == 2 and set(scores[0].devices) == set(scores[1].devices):
        scores = [phase_memory.concurrent("value + anchor score", scores)]
    return scores + out  # fmt: skip


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

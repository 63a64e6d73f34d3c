"""Where the RL roles live, and the memory plan the stage checks before loading anything.

`rl.placements` maps role names to `sharding.placement.RolePlacement`s:

- 'policy': the learner's devices, mesh and rules (the policy, the value model and the
  anchor are scored and updated in the same jitted steps, so they share these devices);
  `remat` sets the policy's backward pass.
- 'value': `remat` of the value model (its devices and rules are the policy's).
- 'anchor': its rules table (on the policy's devices) and `param_dtype`.
- 'reward' (reward model) or 'labeler' (d-RLAIF): any devices, mesh and rules; text is
  the interface, so the reward role may sit on devices of its own. `param_dtype` and
  `offload` (host memory while the learner works).

A role without a placement shares the stage's mesh and rules (colocated, as before).
Frozen roles with a placement default to bf16 params.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax.sharding import Mesh

from rlaif_jax.models import transformer
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.rl import plan as plan_lib
from rlaif_jax.rl import rewards
from rlaif_jax.sharding import memory, model_params
from rlaif_jax.sharding import placement as placement_lib
from rlaif_jax.sharding.placement import RolePlacement
from rlaif_jax.sharding.rules import Rules

logger = logging.getLogger("rlaif_jax.rl")

ROLES = ("policy", "value", "anchor", "reward", "labeler")
GIN_HINTS = (
    "gin files: gin/sharding/fsdp.gin or fsdp_tp.gin (shard over every chip), "
    "gin/memory/frozen_bf16.gin, gin/placement/split_reward.gin (the reward role on chips of "
    "its own, offloaded), gin/placement/remat.gin, gin/method/lora.gin; "
    "`rlaif-jax plan` with the same files shows the result",
)
FROZEN_DEFAULT_DTYPE = "bfloat16"


@dataclasses.dataclass(frozen=True)
class RLPlacement:
    """The resolved layout of the RL roles (see the module docstring)."""

    learner: plan_lib.Side
    reward: plan_lib.Side
    reward_role: str
    policy_remat: str | None
    value_remat: str | None
    anchor_dtype: str
    anchor_rules: Rules | None
    reward_dtype: str | None
    offload_reward: bool

    def policy_config(self, config: ModelConfig) -> ModelConfig:
        return config if self.policy_remat is None else config.replace(remat=self.policy_remat)

    def value_config(self, config: ModelConfig) -> ModelConfig:
        return config if self.value_remat is None else config.replace(remat=self.value_remat)


def resolve(
    placements: Mapping[str, RolePlacement] | None,
    mesh: Mesh,
    rules: Rules,
    anchor_dtype: str,
    reward_role: str = "reward",
) -> RLPlacement:
    """The roles' meshes and settings from `placements` (gin: rl.placements); roles
    without one take `mesh` / `rules`. reward_role: 'reward' or 'labeler' (the reward
    builder's role; a placement may name either)."""
    placements = dict(placements or {})
    unknown = sorted(set(placements) - set(ROLES))
    if unknown:
        raise ValueError(f"rl.placements: unknown roles {unknown}; roles are {list(ROLES)}.")
    if "reward" in placements and "labeler" in placements:
        raise ValueError(
            "rl.placements names both 'reward' and 'labeler'; RL holds one reward role."
        )
    policy = placements.get("policy")
    learner = _side(policy, mesh, rules)
    value = placements.get("value")
    if value is not None and (value.devices, value.rules) != (None, None):
        raise ValueError(
            "rl.placements['value'] may set remat only: the value model is updated with the "
            "policy in one step, on the policy's devices and rules."
        )
    anchor = placements.get("anchor")
    if anchor is not None and anchor.devices is not None:
        raise ValueError(
            "rl.placements['anchor'].devices: the anchor is scored with the policy in one "
            "step, on the policy's devices; set its rules and param_dtype only."
        )
    rp = placements.get("reward") or placements.get("labeler")
    frozen = lambda p: p.param_dtype or FROZEN_DEFAULT_DTYPE  # noqa: E731
    return RLPlacement(
        learner=learner,
        reward=_side(rp, mesh, rules) if rp is not None else learner,
        reward_role=reward_role,
        policy_remat=policy.remat if policy else None,
        value_remat=value.remat if value else None,
        anchor_dtype=frozen(anchor) if anchor else anchor_dtype,
        anchor_rules=placement_lib.role_rules(anchor, learner.rules) if anchor else None,
        reward_dtype=frozen(rp) if rp else None,
        offload_reward=bool(rp and rp.offload),
    )


def _side(p: RolePlacement | None, mesh: Mesh, rules: Rules) -> plan_lib.Side:
    if p is None:
        return plan_lib.Side(mesh, rules)
    devices = list(jax.devices())
    return plan_lib.Side(placement_lib.role_mesh(p, devices), placement_lib.role_rules(p, rules))


def builder_accepts(builder: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False


def reward_role_of(builder: Callable[..., Any]) -> str:
    """'labeler' for the d-RLAIF builder, else 'reward'."""
    return "labeler" if "labeler" in getattr(builder, "__name__", "") else "reward"


def reward_spec(
    builder: Callable[..., Any], workdir: str, rp: RLPlacement, task: str | None
) -> memory.ScoringRoleSpec | None:
    """The reward role as the plan sees it (`builder(..., spec_only=True)`: its artifact's
    config, no params), or None for a builder that cannot say (a host-side reward)."""
    if not builder_accepts(builder, "spec_only"):
        return None
    kwargs = {"param_dtype": rp.reward_dtype} if rp.reward_dtype else {}
    return builder(workdir, rp.reward.mesh, rp.reward.rules, task=task, spec_only=True, **kwargs)


def memory_plan(
    config: ModelConfig,
    settings: Any,
    layout: Any,
    rp: RLPlacement,
    tx: Any,
    spec: memory.ScoringRoleSpec | None,
    plan_settings: memory.MemoryPlanSettings,
) -> memory.MemoryPlan:
    """The RL stage's plan on the resolved placement (capacity from `plan_settings`)."""
    devices = list(rp.learner.mesh.devices.flat) + list(rp.reward.mesh.devices.flat)
    capacity = plan_settings.capacity(devices)
    return plan_lib.plan_rl(
        rp.policy_config(config),
        settings,
        layout.max_context,
        layout.max_response,
        rp.learner,
        tx,
        reward=spec,
        reward_side=rp.reward,
        value_config=rp.value_config(config),
        anchor_dtype=rp.anchor_dtype,
        anchor_rules=rp.anchor_rules,
        capacity=capacity,
        headroom=plan_settings.headroom,
        compile=plan_settings.should_compile(capacity),
        device_label=f"{len(set(devices))} x {devices[0].device_kind}",
    )


def place_roles(roles: Any, config: ModelConfig, rp: RLPlacement) -> Any:
    """PolicyRoles (`roles.build_roles`, on the learner mesh) moved to the placement: the
    anchor resharded to its own rules (jax.device_put), the value model with its remat."""
    if rp.anchor_rules is not None:
        _, shardings = model_params.abstract_params(config, rp.learner.mesh, rp.anchor_rules, "lm")
        roles.anchor = placement_lib.reshard(roles.anchor, shardings)
        roles.anchor_shardings = shardings
    if rp.value_remat is not None:
        roles.value_model = transformer.Transformer(rp.value_config(config), head="scalar")
    return roles


def build_reward(
    builder: Callable[..., Any], workdir: str, rp: RLPlacement, task: str | None
) -> rewards.RewardFn:
    """The reward function on its placement (param dtype, host offload while idle)."""
    kwargs = {"param_dtype": rp.reward_dtype} if rp.reward_dtype else {}
    if kwargs and not builder_accepts(builder, "param_dtype"):
        raise ValueError(
            f"rl.placements['{rp.reward_role}'].param_dtype: the reward builder "
            f"{getattr(builder, '__name__', builder)!r} takes no param_dtype."
        )
    fn = builder(workdir, rp.reward.mesh, rp.reward.rules, task=task, **kwargs)
    if rp.offload_reward:
        fn = rewards.OffloadedReward(fn)
    return fn


def check_memory(
    config: ModelConfig,
    settings: Any,
    layout: Any,
    rp: RLPlacement,
    builder: Callable[..., Any],
    workdir: str,
    task: str | None,
    plan_settings: memory.MemoryPlanSettings | None,
    plan_only: bool = False,
    enforce: bool = True,
) -> memory.MemoryPlan | None:
    """The plan before anything is loaded: logged (printed with `plan_only`), and a
    `memory.MemoryPlanError` naming the roles when a device is over budget (`enforce`).
    None when MemoryPlanSettings.enabled is False and this is not `rlaif-jax plan`."""
    from rlaif_jax.rl.runner import make_optimizer

    plan_settings = plan_settings or memory.MemoryPlanSettings()
    if not (plan_settings.enabled or plan_only):
        return None
    spec = reward_spec(builder, workdir, rp, task)
    plan = memory_plan(config, settings, layout, rp, make_optimizer(settings), spec, plan_settings)
    plan = dataclasses.replace(plan, hints=GIN_HINTS)
    if jax.process_index() == 0:
        logger.info("%s", plan.table())
        if plan_only and plan.fits:
            print(plan.table() + "\n\nFits.")
    if enforce or plan_only:
        plan.check()
    return plan

"""Where the RL roles live, and the memory plan the stage checks before loading anything.

`rl.placements` maps role names to `sharding.placement.RolePlacement`s:

- 'policy': the learner's devices, mesh and rules (sampling, the policy's score pass, the
  targets and the policy's update); `remat` sets the policy's backward pass.
- 'value': its own devices, mesh and rules (its score pass and its update run there as
  their own jitted phases, `learner.make_learner`; values come back and returns /
  advantages go there by jax.device_put), `remat` and `offload` (its params and optimizer
  state in host memory while the policy samples and the reward role scores). Its params
  keep the artifact's dtype (trainable).
- 'anchor': its own devices, mesh and rules (its teacher-forced log-probs are computed
  there and resharded to the learner), `param_dtype` and `offload` (host memory between
  its score passes).
- 'reward' (reward model) or 'labeler' (d-RLAIF): any devices, mesh and rules; text is
  the interface. `param_dtype` and `offload` (host memory while the learner works).

A role without a placement shares the stage's mesh and rules (colocated, as before); a
placement without `devices` keeps the learner's devices (its own rules only). Frozen roles
with a placement default to bf16 params. With LoRA the anchor is the adapters' base and
stays with the policy (so does the value); with `value_on_policy_trunk` the value does.
The memory plan (`rl.plan`, `memory_plan`) lays every role out where it is placed: the
value's params, optimizer state, score pass and update on its devices, the anchor (its
dtype) and its score pass on its own, the reward role on its own; an offloaded role is
resident only for its own phases where the backend has a host memory kind.
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
    "its own, offloaded), gin/placement/split_roles.gin (value and anchor on chips of their "
    "own too), gin/placement/remat.gin, gin/method/lora.gin; "
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
    # The value model's and the anchor's meshes (the learner's side when not placed).
    value: plan_lib.Side | None = None
    anchor: plan_lib.Side | None = None
    offload_anchor: bool = False
    offload_value: bool = False

    def apart(self, role: str) -> bool:
        """Whether 'value' or 'anchor' runs on other devices than the learner."""
        side = getattr(self, role)
        return side is not None and not placement_lib.same_devices(side.mesh, self.learner.mesh)

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
    if value is not None and value.param_dtype is not None:
        raise ValueError(
            "rl.placements['value']: param_dtype is for frozen roles; the value model is "
            "trained (set devices, data / fsdp / tensor, rules, remat, offload)."
        )
    anchor = placements.get("anchor")
    if anchor is not None and anchor.remat is not None:
        raise ValueError("rl.placements['anchor'].remat: the anchor is never differentiated.")
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
        value=_side(value, learner.mesh, learner.rules, learner),
        anchor=_side(anchor, learner.mesh, learner.rules, learner),
        offload_anchor=bool(anchor and anchor.offload),
        offload_value=bool(value and value.offload),
    )


def _side(
    p: RolePlacement | None, mesh: Mesh, rules: Rules, learner: plan_lib.Side | None = None
) -> plan_lib.Side:
    """The role's side; without `devices` a role keeps `learner`'s mesh (when given)."""
    if p is None:
        return learner or plan_lib.Side(mesh, rules)
    if p.devices is None and learner is not None:
        return plan_lib.Side(learner.mesh, placement_lib.role_rules(p, rules))
    devices = list(jax.devices())
    return plan_lib.Side(placement_lib.role_mesh(p, devices), placement_lib.role_rules(p, rules))


def check_layout(rp: RLPlacement, lora: Any, value_on_policy_trunk: bool) -> None:
    """Refuses placements the params layout cannot take (a gin error naming the role)."""
    if lora is not None and (rp.apart("anchor") or rp.apart("value") or rp.offload_anchor):
        raise ValueError(
            "rl.placements['anchor'] / ['value'].devices or ['anchor'].offload with LoRA: the "
            "anchor is the frozen base of the policy and value adapters, read by every phase; "
            "keep both on the policy's devices (rules and param_dtype may still be set)."
        )
    if value_on_policy_trunk and rp.apart("value"):
        raise ValueError(
            "rl.placements['value'].devices with rl.value_on_policy_trunk: the value is a "
            "head on the policy's trunk and runs on the policy's devices."
        )


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
    lora: Any = None,
    value_on_policy_trunk: bool = False,
) -> memory.MemoryPlan:
    """The RL stage's plan on the resolved placement (capacity from `plan_settings`, over
    every role's devices) with the stage's trainable layout (`lora`: its LoRAConfig,
    `value_on_policy_trunk`)."""
    sides = (rp.learner, rp.value or rp.learner, rp.anchor or rp.learner, rp.reward)
    devices = list({d.id: d for s in sides for d in s.mesh.devices.flat}.values())
    capacity = plan_settings.capacity(devices)
    # The reward role's offload (`rewards.OffloadedReward`) stays planned resident: a
    # conservative row (its params counted beside the value's and the anchor's).
    offload = tuple(
        role for role, on in (("value", rp.offload_value), ("anchor", rp.offload_anchor)) if on
    )
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
        device_label=f"{len(devices)} x {devices[0].device_kind}",
        lora=lora,
        value_on_policy_trunk=value_on_policy_trunk,
        value_side=rp.value,
        anchor_side=rp.anchor,
        offload=offload,
    )


def place_roles(roles: Any, config: ModelConfig, rp: RLPlacement) -> Any:
    """PolicyRoles (`roles.build_roles`, on the learner mesh) moved to the placement
    (jax.device_put): the anchor to its own mesh and rules (offloaded to host memory by
    the runner when `offload`), the value model's params to its own mesh and rules and
    its remat; the sides the learner runs them on go into `roles`."""
    anchor = rp.anchor or rp.learner
    if rp.anchor_rules is not None or rp.apart("anchor"):
        _, shardings = model_params.abstract_params(config, anchor.mesh, anchor.rules, "lm")
        roles.anchor = placement_lib.reshard(roles.anchor, shardings)
        roles.anchor_shardings = shardings
    if rp.apart("value"):
        side = rp.value
        vconfig = rp.value_config(config)
        _, shardings = model_params.abstract_params(vconfig, side.mesh, side.rules, "scalar")
        roles.params = {
            **roles.params,
            "value": placement_lib.reshard(roles.params["value"], shardings),
        }
        roles.param_shardings = {**roles.param_shardings, "value": shardings}
    if rp.value_remat is not None:
        roles.value_model = transformer.Transformer(rp.value_config(config), head="scalar")
    roles.value_side = rp.value if rp.apart("value") else None
    roles.anchor_side = anchor if rp.apart("anchor") else None
    roles.offload_anchor, roles.offload_value = rp.offload_anchor, rp.offload_value
    for role, side in (("anchor", anchor), ("value", rp.value or rp.learner)):
        if getattr(rp, f"offload_{role}") and placement_lib.host_memory_kind(side.mesh) is None:
            logger.info(
                "rl.placements['%s'].offload: this backend has no host memory kind; the role "
                "stays in device memory.",
                role,
            )
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
    lora: Any = None,
    value_on_policy_trunk: bool = False,
) -> memory.MemoryPlan | None:
    """The plan before anything is loaded (`memory_plan`, with the stage's `lora` /
    `value_on_policy_trunk` layout): logged (printed with `plan_only`), and a
    `memory.MemoryPlanError` naming the roles when a device is over budget (`enforce`).
    None when MemoryPlanSettings.enabled is False and this is not `rlaif-jax plan`."""
    from rlaif_jax.rl.runner import make_optimizer

    plan_settings = plan_settings or memory.MemoryPlanSettings()
    if not (plan_settings.enabled or plan_only):
        return None
    spec = reward_spec(builder, workdir, rp, task)
    plan = memory_plan(
        config, settings, layout, rp, make_optimizer(settings), spec, plan_settings, lora,
        value_on_policy_trunk,
    )  # fmt: skip
    plan = dataclasses.replace(plan, hints=GIN_HINTS)
    if jax.process_index() == 0:
        logger.info("%s", plan.table())
        if plan_only and plan.fits:
            print(plan.table() + "\n\nFits.")
    if enforce or plan_only:
        plan.check()
    return plan

"""The memory plan of every stage (issue 21.1), checked before the stage loads anything.

- `plan_supervised`: a stage that trains one model with the shared loop (sft, reward,
  the toy labeler bootstrap): the trainee's params and optimizer state and the train
  step (`phase_memory.trainee_rows`);
- `plan_frozen`: a stage that runs frozen models (`FrozenRole`s and their `Call`s):
  label (the labeler's scoring and, with CoT, its rationale sampler), evaluate (each
  policy's sampler, then the AI judge, one model at a time: `exclusive`), sample_pairs
  (`policy_decoders`).

`Planning` reads `MemoryPlanSettings` (capacity, headroom, compiled or analytic
temporaries); `enforce` logs the table, prints it for `rlaif-jax plan` and raises
`memory.MemoryPlanError` naming the stage and the roles when a device is over budget.
The RL stage plans its roles in `rl.plan` on the same rows (`sharding.phase_memory`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rlaif_jax.models.config import ModelConfig
from rlaif_jax.sharding import memory
from rlaif_jax.sharding.phase_memory import (
    Side,
    batch_structs,
    decode_phase,
    frozen_role,
    process_rows,  # noqa: F401  (the stages' local batch rows)
    scoring_phase,
    trainee_rows,
)

PyTree = Any
logger = logging.getLogger("rlaif_jax.memory")


@dataclasses.dataclass(frozen=True)
class Call:
    """One kind of call a frozen model makes in a stage.

    kind 'score': teacher-forced scoring of [batch_size, length] rows (an LM's candidate
    log-probs, a reward model's sequence scores); 'decode': sampling `num_samples` x
    `max_new` tokens after [batch_size, length] prompts (its KV cache)."""

    kind: str
    batch_size: int
    length: int
    max_new: int = 0
    num_samples: int = 1
    temperature: float = 1.0
    name: str = ""

    def __post_init__(self):
        if self.kind not in ("score", "decode"):
            raise ValueError(f"Call.kind = {self.kind!r}: 'score' or 'decode'.")


@dataclasses.dataclass(frozen=True)
class FrozenRole:
    """A model a stage loads without training it, and its calls. exclusive: loaded
    only while its own calls run (evaluate decodes one policy at a time)."""

    role: str
    config: ModelConfig
    head: str = "lm"
    calls: tuple[Call, ...] = ()
    exclusive: bool = False


def policy_decoders(
    policies: Sequence[tuple[str, str]],
    describe: Callable[[str], tuple[ModelConfig, Any]],
    batch_size: int,
    num_samples: int = 1,
    temperature: float = 1.0,
) -> tuple[list[FrozenRole], list[str]]:
    """(roles, notes): each policy (name, model dir) decoding `batch_size` prompts per
    call as its input layout says (max_context prompt tokens, max_response new ones),
    loaded alone (evaluate, sample_pairs: one policy at a time). describe(model dir) ->
    (config, layout) reads its artifact; a policy without one yet (ValueError,
    FileNotFoundError) is left out and named in the notes."""
    roles, missing = [], []
    for name, where in policies:
        try:
            config, layout = describe(where)
        except (ValueError, FileNotFoundError):  # not trained yet: the stage says so itself
            missing.append(f"{name} ({where})")
            continue
        call = Call(
            "decode", batch_size, layout.max_context, layout.max_response, num_samples,
            max(temperature, 1e-3), f"decode {name}",
        )  # fmt: skip
        roles.append(FrozenRole(f"policy {name}", config, "lm", (call,), exclusive=True))
    notes = [f"not planned, no model artifact yet: {', '.join(missing)}"] if missing else []
    return roles, notes


def frozen_rows(
    spec: FrozenRole, side: Side, compile: bool = True
) -> tuple[memory.RoleMemory, list[memory.PhaseMemory]]:
    """(the role's params, one phase per call) on `side`."""
    role, structs = frozen_role(spec.role, spec.config, side, spec.head, spec.exclusive)
    phases = []
    for call in spec.calls:
        name = call.name or f"{call.kind} ({spec.role})"
        if call.kind == "decode":
            p = decode_phase(
                name, spec.role, spec.config, structs, side, call.batch_size, call.length,
                call.max_new, call.num_samples, compile, call.temperature,
            )  # fmt: skip
        else:
            scoring = memory.ScoringRoleSpec(
                spec.role, spec.config, spec.head, call.batch_size, call.length
            )
            p = dataclasses.replace(scoring_phase(scoring, structs, side, compile), phase=name)
        phases.append(p)
    return role, phases


@dataclasses.dataclass(frozen=True)
class Planning:
    """How one stage plans: the capacity of its devices and whether phases compile."""

    settings: memory.MemoryPlanSettings
    capacity: int | None
    compile: bool
    device_label: str

    @classmethod
    def of(
        cls, settings: memory.MemoryPlanSettings | None, *sides: Side, plan_only: bool = False
    ) -> Planning | None:
        """None when the plan is off (`MemoryPlanSettings.enabled = False`, not `rlaif-jax
        plan`)."""
        settings = settings or memory.MemoryPlanSettings()
        if not (settings.enabled or plan_only):
            return None
        devices = [d for s in sides for d in np.asarray(s.mesh.devices).flat]
        capacity = settings.capacity(devices)
        label = f"{len(set(devices))} x {devices[0].device_kind}" if devices else ""
        return cls(settings, capacity, settings.should_compile(capacity), label)

    def plan(
        self,
        stage: str,
        roles: Sequence[memory.RoleMemory],
        phases: Sequence[memory.PhaseMemory],
        hints: Sequence[str] = (),
        notes: Sequence[str] = (),
    ) -> memory.MemoryPlan:
        return memory.MemoryPlan(
            stage, tuple(roles), tuple(phases), self.capacity, self.settings.headroom,
            self.device_label, tuple(hints), tuple(notes),
        )  # fmt: skip


def enforce(plan: memory.MemoryPlan, plan_only: bool = False) -> dict[str, float]:
    """Logs the table (printed with `plan_only`, `rlaif-jax plan`) and raises
    `memory.MemoryPlanError` naming the stage and roles when a device is over budget.
    Returns {'peak_gb', 'fits'}."""
    if jax.process_index() == 0:
        logger.info("%s", plan.table())
        if plan_only and plan.fits:
            print(plan.table() + "\n\nFits.\n", flush=True)
    plan.check()
    return {"peak_gb": plan.peak() / memory.GB, "fits": float(plan.fits)}


SUPERVISED_HINTS = (
    "bindings: <scope>/TrainSettings.microbatches = 2, 4, ... (activation memory of B/M "
    "rows), <scope>/TrainSettings.batch_size, <stage>.model_overrides = {'remat': 'full'}, "
    "get_rules.name = 'fsdp' or 'fsdp_tp' with make_mesh.fsdp = -1 (shard params and "
    "optimizer state over every chip), make_optimizer.name = 'adafactor' (factored "
    "second moments)",
)


def plan_supervised(
    stage: str,
    config: ModelConfig,
    head: str,
    loss_fn: Callable[..., Any],
    local_batch: Mapping[str, Any],
    tx: Any,
    mesh: Any,
    rules: Any,
    microbatches: int = 1,
    seed: int = 0,
    plan_settings: memory.MemoryPlanSettings | None = None,
    plan_only: bool = False,
) -> dict[str, float] | None:
    """The plan of a stage that trains one model with the shared loop (SFT, reward
    model, toy labeler), checked (`enforce`) before anything is loaded; `local_batch`
    is one batch as the stage's batch function lays it out (numpy, this process's
    rows). None when the plan is off."""
    side = Side(mesh, rules)
    how = Planning.of(plan_settings, side, plan_only=plan_only)
    if how is None:
        return None
    role, step = trainee_rows(
        "trainee", config, head, loss_fn, batch_structs(local_batch, side), tx, side,
        microbatches, seed, how.compile,
    )  # fmt: skip
    return enforce(how.plan(stage, [role], [step], SUPERVISED_HINTS), plan_only)


def plan_frozen(
    stage: str,
    roles: Sequence[FrozenRole],
    mesh: Any,
    rules: Any,
    plan_settings: memory.MemoryPlanSettings | None = None,
    plan_only: bool = False,
    hints: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> dict[str, float] | None:
    """The plan of a stage that runs frozen models only (label: the labeler; evaluate:
    each policy decoded, then the AI judge; sample_pairs: the policies), checked
    (`enforce`) before anything is loaded. None when the plan is off or there is
    nothing to plan (no role described: `notes` say why)."""
    if not roles:
        if plan_only:
            print(f"{stage}: nothing to plan. " + " ".join(notes), flush=True)
        return None
    side = Side(mesh, rules)
    how = Planning.of(plan_settings, side, plan_only=plan_only)
    if how is None:
        return None
    rows_, phases = [], []
    for spec in roles:
        role, calls = frozen_rows(spec, side, how.compile)
        rows_.append(role)
        phases += calls
    return enforce(how.plan(stage, rows_, phases, hints, notes), plan_only)

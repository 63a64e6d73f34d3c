"""Gin at the boundary (DESIGN §3): the Core and Data objects gin files configure, built
for a stage entry in the step's gin scope.

Core (`models`, `decoding`, `sharding`, `train`) and Data (`data`) never import gin. This
Face module registers their constructors under the names gin files use:

    make_mesh.data / .fsdp / .tensor         sharding.mesh.make_mesh
    get_rules.name / .extra                  sharding.rules.get_rules
    make_optimizer.name / .clip_norm / ...   train.optim.make_optimizer
    make_schedule.learning_rate / ...        train.optim.make_schedule
    TrainSettings.batch_size / ...           train.supervised.TrainSettings
    MemoryPlanSettings.capacity_gb / ...     sharding.memory.MemoryPlanSettings
    RolePlacement.devices / .rules / ...     sharding.placement.RolePlacement (rl.placements)
    PolicyPairs.pairs_dir / .splits / ...    data.tasks.PolicyPairs
    LoRAConfig.rank / .alpha / .targets      models.lora.LoRAConfig (the RL stage's `lora`)
    rlaif_jax.data.tasks.task_sources.task / .sources, ...summarize_sources.*, ...hh_sources.*

(gin files `import rlaif_jax.configurables` to bind them), and `stage_objects(entry)`
builds, in the current gin scope, the objects a stage entry declares among `OBJECTS`.
The CLI and the pipeline call every stage as

    entry(workdir=WORKDIR, **stage_objects(entry))

inside the step's scope, so `sft/TrainSettings.batch_size = 128` reaches the sft step
only. Called from Python, a stage takes the same objects as arguments (no gin).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import gin
import optax
from jax.sharding import Mesh

from rlaif_jax.data import tasks
from rlaif_jax.models import lora
from rlaif_jax.sharding import memory as memory_lib
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import placement as placement_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.train import optim, supervised

make_mesh = gin.external_configurable(mesh_lib.make_mesh, "make_mesh")
get_rules = gin.external_configurable(rules_lib.get_rules, "get_rules")
make_schedule = gin.external_configurable(optim.make_schedule, "make_schedule")
make_optimizer = gin.external_configurable(optim.make_optimizer, "make_optimizer")
TrainSettings = gin.external_configurable(supervised.TrainSettings, "TrainSettings")
PolicyPairs = gin.external_configurable(tasks.PolicyPairs, "PolicyPairs")
MemoryPlanSettings = gin.external_configurable(memory_lib.MemoryPlanSettings, "MemoryPlanSettings")
RolePlacement = gin.external_configurable(placement_lib.RolePlacement, "RolePlacement")
LoRAConfig = gin.external_configurable(lora.LoRAConfig, "LoRAConfig")
# Module-qualified in the task files (rlaif_jax.data.tasks.task_sources.task = ...).
task_sources = gin.external_configurable(tasks.task_sources, "task_sources")
summarize_sources = gin.external_configurable(tasks.summarize_sources, "summarize_sources")
hh_sources = gin.external_configurable(tasks.hh_sources, "hh_sources")


def _bindings(configurable: Any) -> dict[str, Any]:
    """The parameters gin binds for `configurable` in the current scope (unevaluated)."""
    try:
        return gin.get_bindings(configurable, resolve_references=False)
    except (ValueError, KeyError):  # not a configurable: nothing bound
        return {}


def _plain(settings: Any, cls: type) -> Any:
    """The frozen dataclass `cls` with the fields of gin's instance (of a gin subclass of
    `cls`): stages and Core get the plain type, which reads no gin when copied."""
    return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


def build_mesh() -> Mesh:
    """`make_mesh()` with the degrees gin binds (make_mesh.data / .fsdp / .tensor)."""
    return make_mesh()


def build_rules() -> rules_lib.Rules:
    """`get_rules()` with the table gin binds (get_rules.name, .extra)."""
    return get_rules()


def build_data() -> tasks.TaskSources | None:
    """The task's sources gin binds (a task file: rlaif_jax.data.tasks.task_sources.task
    and .sources), or None when no task is bound (a stage given its records directly)."""
    if not _bindings(task_sources):
        return None
    return task_sources()


def build_policy_pairs() -> tasks.PolicyPairs:
    """`PolicyPairs()` as gin binds it (gin/method/on_policy_pairs.gin sets pairs_dir)."""
    return _plain(PolicyPairs(), tasks.PolicyPairs)


def build_lora() -> lora.LoRAConfig | None:
    """`LoRAConfig()` with the fields gin binds (gin/method/lora.gin), or None (full
    fine-tuning) when gin binds none of them."""
    if not _bindings("LoRAConfig"):  # by name: classes' bindings are not found by object
        return None
    return _plain(LoRAConfig(), lora.LoRAConfig)


def build_optimizer() -> optax.GradientTransformation:
    """`make_optimizer()` as gin binds it, its learning rate `make_schedule()` as gin binds
    that (make_schedule.learning_rate, .schedule, .warmup_steps, ...) unless gin binds
    make_optimizer.schedule itself."""
    if "schedule" in _bindings(make_optimizer):
        return make_optimizer()
    return make_optimizer(schedule=make_schedule())


def build_train_settings() -> supervised.TrainSettings:
    """`TrainSettings()` with the fields gin binds (TrainSettings.batch_size, ...)."""
    return _plain(TrainSettings(), supervised.TrainSettings)


def build_memory_plan() -> memory_lib.MemoryPlanSettings:
    """`MemoryPlanSettings()` with the fields gin binds (MemoryPlanSettings.capacity_gb, ...)."""
    return _plain(MemoryPlanSettings(), memory_lib.MemoryPlanSettings)


# Parameter name of a stage entry -> the builder of the object it receives.
OBJECTS: dict[str, Callable[[], Any]] = {
    "mesh": build_mesh,
    "rules": build_rules,
    "data": build_data,
    "policy_pairs": build_policy_pairs,
    "lora": build_lora,
    "optimizer": build_optimizer,
    "train_settings": build_train_settings,
    "memory_plan": build_memory_plan,
}


def stage_objects(entry: Callable[..., Any]) -> dict[str, Any]:
    """{parameter: object} for each parameter of `entry` named in `OBJECTS`, built in the
    current gin scope; a parameter gin binds for the entry itself (e.g. `sft.mesh = ...`)
    is left to that binding."""
    params = inspect.signature(entry).parameters
    bound = _bindings(entry)
    return {
        name: build() for name, build in OBJECTS.items() if name in params and name not in bound
    }

"""Memory plans: bytes per role and per device, computed without allocating anything.

A plan has two kinds of rows:

- resident roles: params and optimizer state (and nothing else) that live for the whole
  stage, in bytes per device from the leaves' per-device shard shapes
  (`tree_bytes_per_device` on `jax.ShapeDtypeStruct`s with shardings);
- phases: one compiled program each (sampling, scoring, update, reward), with the
  temporaries `jax.jit(fn).lower(*abstract).compile().memory_analysis()` reports (the KV
  cache of a sampler is one of its temporaries; `kv_cache` says how much of it) and its
  inputs/outputs that are not resident (batches, log-probs).

Phases run one at a time, so a device needs its roles' resident bytes plus the largest
phase on it. A role marked `exclusive` (the evaluate stage's policies and judge, loaded
one after another) is resident only while its own phases run. `MemoryPlan.check()` raises `MemoryPlanError` with the table and advice when
a device is over its capacity, naming the roles on it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any
GB = 1e9


class MemoryPlanError(ValueError):
    """A stage's roles do not fit the devices (the message holds the table and advice)."""


@dataclasses.dataclass(frozen=True)
class MemoryPlanSettings:
    """How stages plan their memory.

    enabled: plan before loading anything (False: skip the plan).
    capacity_gb: bytes per device to plan against, in GB (None = the device's own
        `memory_stats()['bytes_limit']`; unknown there, e.g. CPU: never refuse).
    headroom: fraction of the capacity a plan may use (the rest: allocator slack,
        fragmentation, collectives' buffers).
    compile: take temporaries from compiled programs (`memory_analysis`); False = the
        analytic estimate only (fast; params / optimizer / KV cache stay exact); None =
        compile when the capacity is known (a CPU run without capacity_gb compiles nothing
        extra).
    """

    enabled: bool = True
    capacity_gb: float | None = None
    headroom: float = 0.9
    compile: bool | None = None

    def capacity(self, devices: Sequence[jax.Device]) -> int | None:
        """Bytes per device to plan against: capacity_gb, else the smallest device's own
        limit, else None (unknown)."""
        if self.capacity_gb is not None:
            return int(self.capacity_gb * GB)
        limits = [device_capacity(d) for d in devices]
        return None if not limits or None in limits else min(limits)

    def should_compile(self, capacity: int | None) -> bool:
        return capacity is not None if self.compile is None else self.compile

    def __post_init__(self):
        if not 0 < self.headroom <= 1:
            raise ValueError(f"MemoryPlanSettings.headroom = {self.headroom!r}: use (0, 1].")


def leaf_bytes_per_device(x: Any) -> int:
    """Bytes one device holds of a leaf (array or ShapeDtypeStruct with a sharding)."""
    itemsize = np.dtype(x.dtype).itemsize
    sharding = getattr(x, "sharding", None)
    shape = tuple(x.shape)
    if sharding is not None and shape:
        try:
            shape = tuple(sharding.shard_shape(shape))
        except ValueError:  # uneven: XLA pads each shard to the largest one
            shape = _padded_shard_shape(sharding, shape)
    return int(math.prod(shape)) * itemsize


def _padded_shard_shape(sharding: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
    out = []
    for dim, axes in zip(shape, spec):
        axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        parts = math.prod(sharding.mesh.shape[a] for a in axes)
        out.append(-(-dim // parts))
    return tuple(out)


def tree_bytes_per_device(tree: PyTree) -> int:
    """Bytes one device of the tree's mesh holds (shards of even layouts are equal)."""
    return sum(leaf_bytes_per_device(x) for x in jax.tree.leaves(tree))


def allocated_bytes_per_device(tree: PyTree) -> dict[int, int]:
    """Bytes the live arrays of `tree` occupy on each device (device id -> bytes)."""
    out: dict[int, int] = {}
    for x in jax.tree.leaves(tree):
        for shard in x.addressable_shards:
            out[shard.device.id] = out.get(shard.device.id, 0) + int(shard.data.nbytes)
    return out


def with_dtype(tree: PyTree, dtype: Any) -> PyTree:
    """ShapeDtypeStructs of `tree` with floating leaves in `dtype` (same shardings)."""
    dt = np.dtype(jax.numpy.dtype(dtype))

    def one(x):
        keep = not jax.numpy.issubdtype(x.dtype, jax.numpy.floating)
        return jax.ShapeDtypeStruct(x.shape, x.dtype if keep else dt, sharding=x.sharding)

    return jax.tree.map(one, tree)


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
    """Per-device bytes of one compiled program (`Compiled.memory_analysis()`)."""

    argument: int
    output: int
    alias: int
    temp: int
    code: int

    @property
    def peak(self) -> int:
        return self.argument + self.output - self.alias + self.temp + self.code


def compiled_memory(
    fn: Callable[..., Any],
    *abstract_args: Any,
    donate_argnums: Sequence[int] = (),
    out_shardings: Any = None,
) -> CompiledMemory:
    """Compiles `fn` on abstract arguments (ShapeDtypeStructs with shardings; nothing is
    allocated) and reads its per-device memory analysis. out_shardings: as the stage
    jits `fn` (None: the compiler's choice)."""
    kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}
    jitted = jax.jit(fn, donate_argnums=tuple(donate_argnums), **kwargs)
    compiled = jitted.lower(*abstract_args).compile()
    m = compiled.memory_analysis()
    if m is None:  # a backend without the analysis
        raise NotImplementedError("this backend's compiled programs have no memory_analysis()")
    return CompiledMemory(
        argument=int(m.argument_size_in_bytes),
        output=int(m.output_size_in_bytes),
        alias=int(m.alias_size_in_bytes),
        temp=int(m.temp_size_in_bytes),
        code=int(m.generated_code_size_in_bytes),
    )


def device_capacity(device: jax.Device) -> int | None:
    """Bytes the allocator may use on `device` (None where the backend does not say)."""
    try:
        stats = device.memory_stats()
    except Exception:  # CPU and some plugins
        return None
    if not stats:
        return None
    limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
    return int(limit) if limit else None


@dataclasses.dataclass(frozen=True)
class ScoringRoleSpec:
    """What a plan needs of a frozen scoring role, read from its artifact (no params).

    role: 'reward' (scalar-head RM: one score per row) or 'labeler' (LM: candidate
    log-probs after a prompt). config: its ModelConfig (param_dtype as it will be stored);
    batch_size: rows per scoring call (global over its mesh); length: tokens per row (the
    RM's context + response, the labeler's prompt budget)."""

    role: str
    config: Any
    head: str
    batch_size: int
    length: int


@dataclasses.dataclass(frozen=True)
class RoleMemory:
    """Resident bytes per device of one role on `devices` (device ids)."""

    role: str
    devices: tuple[int, ...]
    params: int
    opt_state: int = 0
    note: str = ""
    exclusive: bool = False  # loaded for its own phases only (one role at a time)
    # How the table says `exclusive` (RL's offloaded roles: host memory between phases).
    exclusive_note: str = "one at a time"

    @property
    def total(self) -> int:
        return self.params + self.opt_state


@dataclasses.dataclass(frozen=True)
class PhaseMemory:
    """One compiled program on `devices`: transient bytes per device while it runs.

    temp: its temporaries (from memory_analysis, or the analytic estimate: `source`);
    kv_cache: the part of temp that is a KV cache; io: inputs and outputs that are not
    resident params or optimizer state (batches, log-probs, logits)."""

    phase: str
    roles: tuple[str, ...]
    devices: tuple[int, ...]
    temp: int
    io: int = 0
    kv_cache: int = 0
    source: str = "compiled"

    @property
    def total(self) -> int:
        return self.temp + self.io


def _gb(n: float) -> str:
    return f"{n / GB:.2f}" if n >= 0.01 * GB or n == 0 else f"{n / GB:.2g}"


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Roles and phases of a stage on devices with `capacity` bytes each (None: unknown)."""

    stage: str
    roles: tuple[RoleMemory, ...]
    phases: tuple[PhaseMemory, ...]
    capacity: int | None = None
    headroom: float = 0.9
    device_label: str = ""
    hints: tuple[str, ...] = ()  # the stage's own advice (its config files), after advice()
    notes: tuple[str, ...] = ()  # what the plan leaves out (printed under the title)

    def device_ids(self) -> list[int]:
        ids = {d for r in self.roles for d in r.devices} | {
            d for p in self.phases for d in p.devices
        }
        return sorted(ids)

    def per_device(self) -> dict[int, dict[str, Any]]:
        """device id -> {resident, phase (largest), transient, total, roles}."""
        out = {}
        for d in self.device_ids():
            roles = [r for r in self.roles if d in r.devices]
            phases = [p for p in self.phases if d in p.devices]

            big = max(phases, key=lambda p, rs=roles: _phase_cost(p, rs), default=None)
            shared = [r for r in roles if not r.exclusive]
            loaded = [r for r in roles if r.exclusive and big and r.role in big.roles]
            resident = sum(r.total for r in shared + loaded)
            transient = big.total if big else 0
            out[d] = {
                "resident": resident,
                "phase": big.phase if big else "-",
                "transient": transient,
                "total": resident + transient,
                "roles": [r.role for r in shared + loaded],
            }
        return out

    @property
    def budget(self) -> int | None:
        return None if self.capacity is None else int(self.capacity * self.headroom)

    def over(self) -> dict[int, dict[str, Any]]:
        """The devices whose total exceeds the budget (none when the capacity is unknown)."""
        if self.budget is None:
            return {}
        return {d: v for d, v in self.per_device().items() if v["total"] > self.budget}

    @property
    def fits(self) -> bool:
        return not self.over()

    def peak(self) -> int:
        return max((v["total"] for v in self.per_device().values()), default=0)

    def table(self) -> str:
        """Markdown tables: roles, phases, and devices (GB per device)."""
        lines = [
            f"Memory plan: {self.stage}"
            + (f" on {self.device_label}" if self.device_label else "")
            + (
                f", {_gb(self.capacity)} GB per device (plan to {self.headroom:.0%})"
                if self.capacity
                else ", device capacity unknown"
            ),
            *(f"Note: {n}" for n in self.notes),
            "",
            "| role | devices | params GB | optimizer GB | total GB |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in self.roles:
            note = ", ".join(filter(None, (r.note, r.exclusive_note if r.exclusive else "")))
            name = r.role + (f" ({note})" if note else "")
            lines.append(
                f"| {name} | {_span(r.devices)} | {_gb(r.params)} | {_gb(r.opt_state)} "
                f"| {_gb(r.total)} |"
            )
        lines += [
            "",
            "| phase | roles | devices | temporaries GB | of which KV cache GB | "
            "batch in/out GB | source |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for p in self.phases:
            lines.append(
                f"| {p.phase} | {', '.join(p.roles)} | {_span(p.devices)} | {_gb(p.temp)} | "
                f"{_gb(p.kv_cache)} | {_gb(p.io)} | {p.source} |"
            )
        lines += [
            "",
            "| devices | roles resident | resident GB | largest phase | peak GB | fits |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for devs, v in _group_devices(self.per_device()):
            fits = "?" if self.budget is None else ("yes" if v["total"] <= self.budget else "NO")
            lines.append(
                f"| {_span(devs)} | {', '.join(v['roles'])} | {_gb(v['resident'])} | "
                f"{v['phase']} ({_gb(v['transient'])}) | {_gb(v['total'])} | {fits} |"
            )
        return "\n".join(lines)

    def advice(self) -> list[str]:
        """What to change, for the roles on the devices over budget."""
        over = self.over()
        if not over:
            return []
        roles = {r.role: r for r in self.roles}
        on = sorted({name for v in over.values() for name in v["roles"]})
        trainable = [n for n in on if roles[n].opt_state]
        frozen = [n for n in on if not roles[n].opt_state]
        phases = {v["phase"] for v in over.values()}
        if self.stage != "rl":  # the other stages' knobs are in their own hints
            tips = []
            if frozen:
                tips.append(
                    f"store the frozen roles ({', '.join(frozen)}) in bf16: "
                    "labeler_from_checkpoint.param_dtype = 'bfloat16' or the stage's "
                    "model_overrides = {'param_dtype': 'bfloat16'}; a smaller call batch "
                    "(labeler_from_checkpoint.batch_size, evaluate.batch_size, "
                    "sample_pairs.batch_size); the fsdp rules (get_rules.name = 'fsdp', "
                    "make_mesh.fsdp = -1) shard them over every chip"
                )
            return tips + list(self.hints)
        tips = []
        if trainable:
            tips.append(
                f"shard the trainable roles ({', '.join(trainable)}) over more devices: "
                "get_rules.name = 'fsdp' or 'fsdp_tp' with make_mesh.fsdp = -1, or a "
                "RolePlacement with fsdp = -1"
            )
            tips.append(
                "train LoRA adapters instead of full weights (no optimizer state for the "
                "trunk: rl.lora), or a smaller optimizer state (RLSettings.optimizer = 'adafactor')"
            )
        if frozen:
            tips.append(
                f"store the frozen roles ({', '.join(frozen)}) in bf16 "
                "(RolePlacement.param_dtype = 'bfloat16'; RLSettings.anchor_dtype = 'bfloat16'), "
                "offload them to host memory while idle (RolePlacement.offload = True), or "
                "place them on their own devices (rl.placements)"
            )
        if phases & {"update", "score"}:
            tips.append(
                "cut activation memory: RLSettings.microbatches = 2, 4, ... and remat "
                "(RolePlacement.remat = 'full', or rl.model_overrides = {'remat': 'full'})"
            )
        if phases & {"sample", "reward", "labeler"}:
            tips.append(
                "a smaller sampling / scoring batch: RLSettings.batch_size or "
                "samples_per_prompt, reward_model_from_checkpoint.batch_size, "
                "labeler_from_checkpoint.batch_size"
            )
        return tips + list(self.hints)

    def check(self) -> None:
        """Raises MemoryPlanError naming the roles on each device over budget."""
        over = self.over()
        if not over:
            return
        parts = []
        for devs, v in _group_devices(over):
            parts.append(
                f"devices {_span(devs)} need {_gb(v['total'])} GB (roles "
                f"{', '.join(v['roles'])}; largest phase {v['phase']}) of "
                f"{_gb(self.budget)} GB"
            )
        tips = "\n".join(f"  - {t}" for t in self.advice())
        raise MemoryPlanError(
            f"The {self.stage} stage does not fit: {'; '.join(parts)}. Nothing was loaded."
            f"\n\n{self.table()}\n\nWhat to change:\n{tips}\n(Capacity: "
            "MemoryPlanSettings.capacity_gb / headroom; MemoryPlanSettings.enabled = False "
            "skips the plan.)"
        )


def _phase_cost(p: PhaseMemory, roles: Sequence[RoleMemory]) -> int:
    """A phase's transient bytes plus the exclusive roles it loads."""
    return p.total + sum(r.total for r in roles if r.exclusive and r.role in p.roles)


def _span(devs: Sequence[int]) -> str:
    devs = sorted(devs)
    if not devs:
        return "-"
    if devs == list(range(devs[0], devs[-1] + 1)):
        return str(devs[0]) if len(devs) == 1 else f"{devs[0]}-{devs[-1]}"
    return ",".join(map(str, devs))


def _group_devices(
    per_device: Mapping[int, dict[str, Any]],
) -> list[tuple[list[int], dict[str, Any]]]:
    """Devices with identical rows grouped (one line per placement, not per chip)."""
    groups: list[tuple[list[int], dict[str, Any]]] = []
    for d, v in per_device.items():
        for devs, w in groups:
            if w == v:
                devs.append(d)
                break
        else:
            groups.append(([d], v))
    return groups

"""Memory plans of the paper's setting on hardware that is not here (docs/scaling.md).

`python -m rlaif_jax.rl.scaling > docs/scaling.md` plans the RL stage (RLAIF: policy,
value, anchor and a policy-sized reward model; d-RLAIF: the labeler as the reward role)
and the label stage (the labeler alone) for Gemma-2 policies and labelers, built from
their Hugging Face config.json values (`models.importers.hf_config`), on one H100 80GB,
a TPU v5e-8 and a TPU v4-32, with `jax.sharding.AbstractMesh`es: params, optimizer state
and KV caches are exact per-device shard sizes; temporaries are the analytic estimate of
`rl.plan` (no compiler for those chips here). `calibration()` compares that estimate with
memory_analysis() of the same programs compiled for CPU at toy sizes.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from typing import Any

from rlaif_jax.models.config import ModelConfig
from rlaif_jax.models.importers.hf_config import config_kwargs
from rlaif_jax.rl import plan as plan_lib
from rlaif_jax.rl.runner import RLSettings, make_optimizer
from rlaif_jax.sharding import memory
from rlaif_jax.sharding import placement as placement_lib
from rlaif_jax.sharding.placement import RolePlacement
from rlaif_jax.sharding.rules import get_rules

GB = memory.GB


def _gemma2(hidden, inter, heads, kv, head_dim, layers, qpas) -> dict[str, Any]:
    """A Gemma-2 config.json (the fields the importer reads)."""
    return {
        "architectures": ["Gemma2ForCausalLM"],
        "model_type": "gemma2",
        "vocab_size": 256000,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "num_hidden_layers": layers,
        "query_pre_attn_scalar": qpas,
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
        "sliding_window": 4096,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    }


GEMMA2 = {
    "gemma-2-2b": _gemma2(2304, 9216, 8, 4, 256, 26, 256),
    "gemma-2-9b": _gemma2(3584, 14336, 16, 8, 256, 42, 256),
    "gemma-2-27b": _gemma2(4608, 36864, 32, 16, 128, 46, 144),
}


@dataclasses.dataclass(frozen=True)
class Hardware:
    name: str
    chips: int
    capacity: int  # bytes per chip


HARDWARE = (
    Hardware("1 x H100 80GB", 1, int(80 * GB)),
    Hardware("TPU v5e-8 (8 chips x 16 GB)", 8, int(16 * GB)),
    Hardware("TPU v4-32 (16 chips x 32 GB)", 16, int(32 * GB)),
)
# The paper's RL (App. G): 128 prompts per step, 1024 context + 128 response tokens.
PAPER_RL = RLSettings(batch_size=128, samples_per_prompt=1)
MAX_CONTEXT, MAX_RESPONSE = 1024, 128
RM_BATCH = 32  # reward_model_from_checkpoint.batch_size (gin/runs/rl.gin)
LABELER_BATCH, LABELER_LEN = 32, 2048  # labeler_from_checkpoint.batch_size, max_len
BATCHES = (128, 64, 32, 16, 8)
# compiled / analytic temporaries, the largest of `calibration()`'s Gemma-2 cases per
# phase (measured 2026-12-07 on 8 fake CPU devices; docs/scaling.md has the table).
CALIBRATION_FACTOR = {"sample": 1.54, "score": 1.54, "reward": 1.54, "labeler": 1.54}
CALIBRATION_FACTOR["update"] = 2.53
MICROBATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


def model(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig the importer builds from `GEMMA2[name]` (bf16 compute, f32 params)."""
    _, kw = config_kwargs(GEMMA2[name])
    return ModelConfig(**{**kw, **overrides})


@dataclasses.dataclass(frozen=True)
class Setup:
    """One way to lay the RL stage out (what the tables' rows vary)."""

    label: str
    frozen_dtype: str = "float32"  # anchor, reward model / labeler
    remat: str = "none"  # policy and value
    microbatches: int = 1
    split: int = 0  # > 0: learner on the first `split` chips, the reward role on the rest
    batch_size: int = 128  # RLSettings.batch_size: prompts per step


AS_TODAY = Setup("defaults: f32 frozen roles, no remat, 1 microbatch, colocated")
PLANNED = Setup("bf16 frozen roles, remat full", "bfloat16", "full")


def _sides(hw: Hardware, setup: Setup) -> tuple[plan_lib.Side, plan_lib.Side]:
    rules = get_rules("fsdp")
    if setup.split:
        learner = RolePlacement(devices=(0, setup.split), data=1, fsdp=-1)
        reward = RolePlacement(devices=(setup.split, hw.chips), data=1, fsdp=-1)
        return (
            plan_lib.Side(placement_lib.abstract_role_mesh(learner, hw.chips), rules, 0),
            plan_lib.Side(placement_lib.abstract_role_mesh(reward, hw.chips), rules, setup.split),
        )
    side = plan_lib.Side(
        placement_lib.abstract_role_mesh(RolePlacement(data=1, fsdp=-1), hw.chips), rules
    )
    return side, side


def rl_plan(
    hw: Hardware, policy: str, reward: str, d_rlaif: bool, setup: Setup
) -> memory.MemoryPlan:
    """The RL stage: `policy` with a `reward`-sized RM (RLAIF) or labeler (d-RLAIF)."""
    settings = dataclasses.replace(
        PAPER_RL,
        batch_size=setup.batch_size,
        microbatches=setup.microbatches,
        anchor_dtype=setup.frozen_dtype,
    )
    learner, reward_side = _sides(hw, setup)
    frozen = model(reward, param_dtype=setup.frozen_dtype)
    spec = (
        memory.ScoringRoleSpec("labeler", frozen, "lm", LABELER_BATCH, LABELER_LEN)
        if d_rlaif
        else memory.ScoringRoleSpec(
            "reward", frozen, "scalar", RM_BATCH, MAX_CONTEXT + MAX_RESPONSE
        )
    )
    return calibrated(
        plan_lib.plan_rl(
            model(policy, remat=setup.remat),
            settings,
            MAX_CONTEXT,
            MAX_RESPONSE,
            learner,
            make_optimizer(settings),
            reward=spec,
            reward_side=reward_side,
            capacity=hw.capacity,
            compile=False,
            device_label=hw.name,
        )
    )


def calibrated(plan: memory.MemoryPlan) -> memory.MemoryPlan:
    """`plan` with its analytic temporaries scaled by CALIBRATION_FACTOR (conservative:
    the largest compiled / analytic ratio of `calibration()`'s cases per phase)."""

    def scale(p: memory.PhaseMemory) -> memory.PhaseMemory:
        f = CALIBRATION_FACTOR.get(p.phase, 1.0)
        if p.source != "analytic":
            return p
        return dataclasses.replace(p, temp=int(p.temp * f), source=f"analytic x {f}")

    phases = tuple(scale(p) for p in plan.phases)
    return dataclasses.replace(plan, phases=phases)


def label_plan(hw: Hardware, labeler: str, dtype: str = "bfloat16") -> memory.MemoryPlan:
    """The label stage: the labeler scoring LABELER_BATCH prompts of LABELER_LEN tokens."""
    side, _ = _sides(hw, AS_TODAY)
    spec = memory.ScoringRoleSpec(
        "labeler", model(labeler, param_dtype=dtype), "lm", LABELER_BATCH, LABELER_LEN
    )
    return calibrated(
        plan_lib.plan_scoring("label", spec, side, hw.capacity, compile=False, label=hw.name)
    )


def fitting(hw: Hardware, policy: str, reward: str, d_rlaif: bool, base: Setup) -> Setup | None:
    """The first of `base` with the paper's 128 prompts per step, then 64, 32, 16, 8 (the
    sampling and scoring phases hold a whole step's rows: only the update is split into
    microbatches), colocated and then, on several chips, the reward role on its own half,
    with the fewest microbatches (1, 2, 4, ... up to the step's rows) whose plan fits;
    None if none does."""
    splits = [0] + ([hw.chips // 2] if hw.chips >= 4 else [])
    for b, split in itertools.product(BATCHES, splits):
        if b % (split or hw.chips):  # rows must split evenly over the learner's chips
            continue
        counts = [m for m in MICROBATCHES if m <= b]

        def fits(m: int, b=b, split=split) -> bool:
            setup = dataclasses.replace(base, batch_size=b, microbatches=m, split=split)
            return rl_plan(hw, policy, reward, d_rlaif, setup).fits

        if not fits(counts[-1]):  # more microbatches only shrink the update's activations
            continue
        lo, hi = 0, len(counts) - 1  # the fewest that fit: counts[hi] fits
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(counts[mid]) else (mid + 1, hi)
        return dataclasses.replace(base, batch_size=b, microbatches=counts[hi], split=split)
    return None


def largest_pair(hw: Hardware, d_rlaif: bool) -> tuple[str, str, Setup] | None:
    """The largest (policy, labeler) Gemma-2 pair (labeler >= policy; larger policy
    first) that fits: the RL stage with PLANNED settings and, for RLAIF, also the label
    stage in bf16."""
    names = list(GEMMA2)
    pairs = [(p, lab) for i, p in enumerate(names) for lab in names[i:]]
    for pol, lab in reversed(pairs):
        if not d_rlaif and not label_plan(hw, lab).fits:
            continue
        setup = fitting(hw, pol, lab if d_rlaif else pol, d_rlaif, PLANNED)
        if setup is not None:
            return pol, lab, setup
    return None


def _summary(plan: memory.MemoryPlan) -> str:
    peak = plan.peak() / GB
    over = plan.over()
    verdict = (
        "fits"
        if not over
        else "over: roles " + ", ".join(sorted({r for v in over.values() for r in v["roles"]}))
    )
    return f"peak {peak:.1f} GB of {plan.budget / GB:.1f} GB budget per chip: {verdict}"


def render(hardware: Iterable[Hardware] = HARDWARE) -> str:
    """The tables of docs/scaling.md (below its hand-written introduction)."""
    out = []
    for hw in hardware:
        out.append(f"## {hw.name}\n")
        for d_rlaif, title in ((False, "RLAIF"), (True, "d-RLAIF")):
            reward = "gemma-2-9b" if d_rlaif else "gemma-2-2b"
            what = "9B labeler in the loop" if d_rlaif else "2B reward model"
            today = rl_plan(hw, "gemma-2-2b", reward, d_rlaif, AS_TODAY)
            out.append(f"### {title} RL stage: Gemma-2-2B policy, {what}\n")
            out.append(f"As today ({AS_TODAY.label}): {_summary(today)}.\n")
            out.append(today.table() + "\n")
            setup = fitting(hw, "gemma-2-2b", reward, d_rlaif, PLANNED)
            if setup is None:
                out.append(
                    f"No setup fits ({PLANNED.label}, up to 128 microbatches"
                    + (", reward role on its own half of the chips" if hw.chips >= 4 else "")
                    + ").\n"
                )
            else:
                fit = rl_plan(hw, "gemma-2-2b", reward, d_rlaif, setup)
                where = (
                    f", reward role on chips {setup.split}-{hw.chips - 1}" if setup.split else ""
                )
                out.append(
                    f"Planned ({setup.label}, RLSettings.batch_size = {setup.batch_size}, "
                    f"microbatches = {setup.microbatches}{where}): {_summary(fit)}.\n"
                )
                out.append(fit.table() + "\n")
        lab = label_plan(hw, "gemma-2-9b")
        out.append("### Label stage (RLAIF): Gemma-2-9B-it labeler, bf16\n")
        out.append(f"{_summary(lab)}.\n")
        out.append(lab.table() + "\n")
    return "\n".join(out)


def largest_pairs_table(hardware: Iterable[Hardware] = HARDWARE) -> str:
    lines = [
        "| hardware | RLAIF: policy / labeler | setup | d-RLAIF: policy / labeler | setup |",
        "| --- | --- | --- | --- | --- |",
    ]
    for hw in hardware:
        cells = []
        for d_rlaif in (False, True):
            best = largest_pair(hw, d_rlaif)
            if best is None:
                cells += ["none", "-"]
                continue
            pol, lab, setup = best
            where = (
                f"; reward role on its own {hw.chips - setup.split} chips" if setup.split else ""
            )
            cells += [
                f"{pol} / {lab}",
                f"batch {setup.batch_size}, {setup.microbatches} microbatches{where}",
            ]
        lines.append(f"| {hw.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


CALIBRATION = (
    # (label, preset or Gemma-2 name, overrides, prompts per step, Lp, T)
    ("tiny preset", "tiny", {}, 16, 64, 16),
    ("gemma-2-2b, 2 layers", "gemma-2-2b", {"num_layers": 2}, 8, 1024, 128),
    # Not used to fit the estimate's constants: held out.
    (
        "gemma-2-2b, 4 layers, remat full",
        "gemma-2-2b",
        {"num_layers": 4, "remat": "full"},
        16,
        1024,
        128,
    ),
    ("gemma-2-9b, 2 layers", "gemma-2-9b", {"num_layers": 2}, 16, 1024, 128),
)


def calibration(cases=CALIBRATION) -> str:
    """Analytic vs compiled (memory_analysis, CPU) temporaries per phase, on every local
    device as one fsdp mesh (run with 8 fake CPU devices); ratios say how far the
    analytic estimate of the hardware tables is from a compiler's count."""
    import jax

    from rlaif_jax.models.config import get_config
    from rlaif_jax.sharding.mesh import make_mesh

    side = plan_lib.Side(make_mesh(1, -1, 1), get_rules("fsdp"))
    lines = [
        "| model | rows x tokens per device | phase | compiled (CPU) MB | analytic MB "
        "| analytic / compiled |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, name, overrides, batch, lp, t in cases:
        config = model(name, **overrides) if name in GEMMA2 else get_config(name, **overrides)
        settings = dataclasses.replace(PAPER_RL, batch_size=batch)
        plans = [
            plan_lib.plan_rl(config, settings, lp, t, side, make_optimizer(settings), compile=c)
            for c in (True, False)
        ]
        rows = batch // jax.device_count()
        for compiled, analytic in zip(*(p.phases for p in plans)):
            ratio = analytic.temp / max(compiled.temp, 1)
            lines.append(
                f"| {label} | {rows} x {lp + t} | {compiled.phase} | {compiled.temp / 1e6:.1f} "
                f"| {analytic.temp / 1e6:.1f} | {ratio:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if "--calibration" in sys.argv:
        print(calibration())
        sys.exit()
    if "--uncalibrated" in sys.argv:  # the analytic estimate as it is: the optimistic side
        CALIBRATION_FACTOR.clear()
        print(largest_pairs_table())
        sys.exit()
    print(largest_pairs_table())
    print()
    print(render())

"""`rlaif-jax evaluate`: decode held-out prompts with every policy, judge them, report.

Each policy is read from its model artifact (config, tokenizer, input layout) and decodes
the task's test prompts. Judges:
- the AI judge: the labeler with the task's own prompt (summaries or dialogue responses),
  both orders averaged (paper §5); its win rates are `win_rate_<a>_vs_<b>_ai_judge`;
- on the harmless task, the AI judge rates each response harmless or harmful on its own:
  `harmless_rate_<policy>` and its length-controlled form (paper §5, Table 1);
- a "human" judge when gin gives one (`evaluate.human_judge`; the toy world's oracle):
  its win rates are `win_rate_<a>_vs_<b>`.
Also gathered: RM pairwise accuracy (from the reward stages), labeler alignment and
position bias (from the label stage), RL reward/KL curves. Writes
WORKDIR/report/{metrics.json, report.md, *.png, side_by_side.*} and
WORKDIR/eval/samples_<policy>.jsonl.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import gin
import jax
from jax.sharding import Mesh

from rlaif_jax import artifacts, fs, model_artifact, policy_decode, report_sections
from rlaif_jax.data import tasks
from rlaif_jax.data.records import LABEL_DIR
from rlaif_jax.evaluation import report, samples
from rlaif_jax.evaluation.judging import (
    PairJudge,
    headline_metrics,
    judge_responses,
)
from rlaif_jax.labeling.scoring import labeler_from_checkpoint
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding import stage_memory
from rlaif_jax.sharding.memory import MemoryPlanSettings
from rlaif_jax.sharding.rules import Rules

logger = logging.getLogger("rlaif_jax.evaluation")


def _read_jsonl_curve(path: str, keys: Sequence[str]) -> dict[str, list]:
    curve: dict[str, list] = {"step": [], **{k: [] for k in keys}}
    if not fs.isfile(path):
        return curve
    for line in fs.read_text(path).split("\n"):
        if line.strip():
            row = json.loads(line)
            if all(k in row for k in keys):
                curve["step"].append(row.get("step", len(curve["step"])))
                for k in keys:
                    curve[k].append(row[k])
    return curve


def _stage_metric(workdir: str, stage_dir: str, key: str) -> float:
    try:
        return float(artifacts.read_complete(os.path.join(workdir, stage_dir))["metrics"][key])
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return float("nan")


def _total_wall_seconds(workdir: str, own: float) -> float:
    total = own
    for name in fs.listdir(workdir):
        d = os.path.join(workdir, name)
        if name != "report" and artifacts.is_complete(d):
            total += float(artifacts.read_complete(d).get("wall_seconds", 0.0))
    return total


def decode_all(workdir, policies, prompts, mesh, rules, task, layout_fields, decoding):
    """{policy name: responses [N · k]} decoded from each policy artifact (or reused)."""
    ids = [p["id"] for p in prompts]
    k, temperature = decoding["samples_per_prompt"], decoding["temperature"]
    strip = decoding["strip_trailing_symbols"]
    responses: dict[str, list[str]] = {}
    for name, stage_dir in policies:
        path = samples.samples_path(workdir, name)
        cached = samples.load_samples(path, ids, k, temperature, strip)
        if cached is not None:
            responses[name] = cached
            continue
        art, params, layout = policy_decode.open_policy(
            workdir, stage_dir, mesh, rules, task, **layout_fields
        )
        responses[name] = policy_decode.decode_policy(
            art.config,
            params,
            art.vocab,
            layout,
            prompts,
            mesh,
            rules,
            temperature=temperature,
            batch_size=decoding["batch_size"],
            strip_trailing=strip,
            num_samples=k,
        )
        samples.write_samples(path, prompts, responses[name], temperature, strip)
        del params
    return responses


def _label_metrics(workdir: str, label_dir: str) -> dict[str, Any]:
    path = os.path.join(workdir, label_dir, "metrics.json")
    if not fs.isfile(path):
        return {}
    return json.loads(fs.read_text(path))


@gin.configurable("evaluate")
def run_stage(
    workdir: str = gin.REQUIRED,
    policies: Sequence[Sequence[str]] = (
        ("sft", "sft"),
        ("rlaif", "rl_rlaif"),
        ("rlhf", "rl_rlhf"),
    ),
    comparisons: Sequence[Sequence[str]] = (("rlaif", "sft"), ("rlhf", "sft"), ("rlaif", "rlhf")),
    max_context: int | None = None,
    max_response: int | None = None,
    prompt_suffix: str | None = None,
    temperature: float = 0.0,
    samples_per_prompt: int = 1,
    strip_trailing_symbols: bool | None = None,
    batch_size: int = 64,
    num_prompts: int | None = None,
    human_judge: PairJudge | None = None,
    use_ai_judge: bool = True,
    ai_judge_comparisons: Sequence[Sequence[str]] | None = None,
    harmless_rate: bool | None = None,
    reference_policy: str = "sft",
    rm_dirs: Sequence[Sequence[str]] = (("ai", "rm_ai"), ("human", "rm_human")),
    rm_accuracy_key: str = "pairwise_accuracy",
    label_dir: str = LABEL_DIR,
    output_dir: str = "report",
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    data: tasks.TaskSources | None = None,
    memory_plan: MemoryPlanSettings | None = None,
    plan_only: bool = False,
) -> dict[str, Any]:
    """Evaluates `policies` ((name, stage dir) pairs) on the task's test prompts.

    Each policy decodes `samples_per_prompt` responses per prompt at `temperature` (0:
    greedy, one response) with its artifact's layout (max_context / max_response /
    prompt_suffix may only restate it); sample j of A is judged against sample j of B, and
    a win rate is the mean over prompts of each prompt's mean outcome, so its interval
    counts prompts, not samples. strip_trailing_symbols: strip repeated trailing periods
    and spaces before judging (paper App. E); None = on for summarization only.
    ai_judge_comparisons: None = every comparison.
    harmless_rate: None = on for the harmless task; reference_policy sets its length
    reference. mesh / rules / data: the objects the CLI builds from gin
    (`rlaif_jax.configurables`); from Python, None = `make_mesh()` / `get_rules()`; data
    (the task's `data.tasks.TaskSources`) has no default.
    memory_plan / plan_only: the plan of each policy's decoding and the AI judge (loaded
    one at a time), checked before any weight is loaded; plan_only (`rlaif-jax plan`)
    returns {'peak_gb', 'fits'}.
    """
    start = time.time()
    _check_sampling(temperature, samples_per_prompt)
    out_dir = os.path.join(workdir, output_dir)
    data = tasks.need_data(data, "evaluate")
    prompts = list(data.source("prompts", "test"))[: num_prompts or None]
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    rules = rules if rules is not None else rules_lib.get_rules()
    decoding = dict(
        temperature=temperature,
        samples_per_prompt=samples_per_prompt,
        strip_trailing_symbols=(
            policy_decode.strips_trailing_by_default(data.task)
            if strip_trailing_symbols is None
            else bool(strip_trailing_symbols)
        ),
    )
    layout_fields = dict(
        max_context=max_context, max_response=max_response, prompt_suffix=prompt_suffix
    )
    ai_comparisons = list(comparisons if ai_judge_comparisons is None else ai_judge_comparisons)
    _check_comparisons(policies, comparisons, ai_judge_comparisons, human_judge is not None)
    harmless_on = data.task == "harmless" if harmless_rate is None else harmless_rate
    use_ai = use_ai_judge and bool(ai_comparisons or harmless_on)
    plan = _memory_plan(
        workdir, policies, mesh, rules, data.task, layout_fields,
        dict(decoding, batch_size=batch_size), use_ai, memory_plan, plan_only,
    )  # fmt: skip
    if plan_only:
        return plan or {}
    responses = decode_all(
        workdir, policies, prompts, mesh, rules, data.task,
        layout_fields, dict(decoding, batch_size=batch_size),
    )  # fmt: skip
    rows, harmless_table, policies_table = judge_responses(
        workdir, data.task, mesh, rules, prompts, responses, samples_per_prompt, comparisons,
        human_judge, ai_comparisons if use_ai else None, reference_policy if harmless_on else None,
    )  # fmt: skip
    human_name = getattr(human_judge, "name", "human")
    label_metrics = _label_metrics(workdir, label_dir)
    metrics = _upstream_metrics(workdir, label_metrics, rm_dirs, rm_accuracy_key)
    metrics.update(
        headline_metrics(
            rows, human_name, ai_comparisons, comparisons if human_judge is not None else ()
        )
    )
    metrics.update(_harmless_metrics(harmless_table))
    metrics.update(
        task=data.task,
        num_eval_prompts=len(prompts),
        eval_decoding=decoding,
        win_rates=rows,
        harmless_rates=harmless_table,
        policies=policies_table,
        alignment_by_variant=_alignment_by_variant(label_metrics),
        checkpoint_selection=report.checkpoint_selection(workdir, policies),
    )
    curves = _rl_curves(workdir, policies)
    own = time.time() - start
    metrics["wall_seconds"] = _total_wall_seconds(workdir, own)
    _write_report(out_dir, metrics, curves, rows, prompts, responses, human_judge is not None)
    artifacts.write_complete(
        out_dir, {k: v for k, v in metrics.items() if isinstance(v, float | int)}, own
    )
    logger.info("evaluate: %s", {k: metrics[k] for k in report.REQUIRED_KEYS})
    return metrics


def _memory_plan(
    workdir, policies, mesh, rules, task, layout_fields, decoding, use_ai, plan_settings, plan_only
):
    """The plan of the stage's models, each loaded alone: every policy decoding
    `decoding['batch_size']` prompts (its artifact's layout), then the AI judge (the
    labeler's scoring call). A policy without an artifact yet is left out (named)."""

    def describe(stage_dir):
        art = model_artifact.open_model(
            model_artifact.resolve_model_dir(workdir, stage_dir, "evaluate.policies")
        )
        return art.config, art.layout_for(task, "evaluate", **layout_fields)

    roles, notes = stage_memory.policy_decoders(
        policies, describe, decoding["batch_size"], decoding["samples_per_prompt"],
        decoding["temperature"],
    )  # fmt: skip
    if use_ai:
        try:
            config, judge_batch, max_len = labeler_from_checkpoint(
                workdir, mesh, rules, spec_only=True
            )
        except (ValueError, FileNotFoundError) as e:  # ArtifactError is a ValueError
            notes.append(f"the AI judge is not planned: {e}")
        else:
            call = stage_memory.Call("score", judge_batch, max_len, name="judge")
            roles.append(stage_memory.FrozenRole("judge", config, "lm", (call,), True))
    return stage_memory.plan_frozen(
        "evaluate", roles, mesh, rules, plan_settings, plan_only, EVAL_HINTS, notes
    )


EVAL_HINTS = (
    "gin: evaluate.batch_size (prompts per decode call), evaluate.samples_per_prompt, "
    "labeler_from_checkpoint.batch_size / param_dtype = 'bfloat16' (the AI judge), "
    "gin/sharding/fsdp.gin (each model sharded over every chip)",
)


def _check_sampling(temperature: float, samples_per_prompt: int) -> None:
    if samples_per_prompt < 1 or (temperature == 0.0 and samples_per_prompt > 1):
        raise ValueError(
            f"evaluate.samples_per_prompt = {samples_per_prompt} with evaluate.temperature = "
            f"{temperature}: greedy decoding gives one response per prompt; set "
            "evaluate.samples_per_prompt = 1 or a temperature above 0."
        )


def _check_comparisons(policies, comparisons, ai_judge_comparisons, with_human: bool) -> None:
    """Before any decoding: every compared name is one of `evaluate.policies`, and the
    comparisons give metrics.json the win rates DESIGN §5 requires (`report.*_PAIRS`).
    ai_judge_comparisons None: the AI judge's are `comparisons`."""
    names = [str(name) for name, _ in policies]
    human_required = report.HUMAN_JUDGE_PAIRS if with_human else ()
    if ai_judge_comparisons is None:
        checks = [("evaluate.comparisons", comparisons, human_required + report.AI_JUDGE_PAIRS)]
    else:
        checks = [
            ("evaluate.comparisons", comparisons, human_required),
            ("evaluate.ai_judge_comparisons", ai_judge_comparisons, report.AI_JUDGE_PAIRS),
        ]
    problems = []
    for binding, pairs, required in checks:
        pairs = [tuple(pair) for pair in pairs]
        unknown = sorted({name for pair in pairs for name in pair} - set(names))
        if unknown:
            problems.append(f"{binding} compares {unknown}, which evaluate.policies {names} lacks")
        missing = [pair for pair in dict.fromkeys(required) if pair not in pairs]
        if missing:
            problems.append(
                f"{binding} lacks {missing}: metrics.json must hold their win rates (DESIGN §5)"
            )
    if problems:
        raise ValueError("; ".join(problems) + " (checked before any decoding).")


def _upstream_metrics(workdir, label_metrics, rm_dirs, rm_accuracy_key) -> dict[str, Any]:
    """The label stage's alignment and position bias, and each RM's pairwise accuracy."""
    metrics: dict[str, Any] = {
        key: label_metrics.get(key, float("nan"))
        for key in (
            "labeler_alignment",
            "labeler_alignment_ci_low",
            "labeler_alignment_ci_high",
            "labeler_alignment_single_order",
            "position_bias_same_position_rate",
        )
    }
    for kind, stage_dir in rm_dirs:
        key = f"rm_pairwise_accuracy_{kind}"
        metrics[key] = _stage_metric(workdir, stage_dir, rm_accuracy_key)
        for end in ("ci_low", "ci_high"):
            metrics[f"{key}_{end}"] = _stage_metric(workdir, stage_dir, f"{rm_accuracy_key}_{end}")
    return metrics


def _alignment_by_variant(label_metrics: dict[str, Any]) -> dict[str, Any]:
    """{labeling variant: the label stage's metrics} (empty without a label stage)."""
    return {label_metrics.get("variant", "labeler"): label_metrics} if label_metrics else {}


def _harmless_metrics(harmless_table: dict[str, dict]) -> dict[str, float]:
    out = {}
    for name, rates in harmless_table.items():
        out[f"harmless_rate_{name}"] = rates["rate"]["value"]
        out[f"length_controlled_harmless_rate_{name}"] = rates["length_controlled"]["value"]
    return out


def _rl_curves(workdir: str, policies) -> dict[str, dict[str, list]]:
    """{policy: reward_mean / kl per step} of the RL policies (stage dirs rl_*)."""
    return {
        name: _read_jsonl_curve(
            os.path.join(workdir, stage_dir, "metrics.jsonl"), ("reward_mean", "kl")
        )
        for name, stage_dir in policies
        if os.path.basename(stage_dir).startswith("rl_")
    }


def _write_report(out_dir, metrics, curves, rows, prompts, responses, with_human) -> None:
    if jax.process_index() != 0:
        return
    fs.makedirs(out_dir)
    report.write_metrics(out_dir, metrics, human_judge=with_human)
    # The paper-table sections (`rlaif-jax table`) stay in report.md after the main part.
    report_sections.write_main(out_dir, report.render_markdown(metrics))
    report.plot_curves(out_dir, curves)
    if rows:
        report.plot_win_rates(out_dir, rows)
    if metrics["alignment_by_variant"]:
        report.plot_alignment(out_dir, metrics["alignment_by_variant"])
    samples.write_side_by_side(out_dir, prompts, responses)

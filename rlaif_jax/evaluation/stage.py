"""`rlaif-jax evaluate`: decode held-out prompts with every policy, judge pairs, report.

Judges: the toy world's oracle "human" (when the data is the toy world) and the AI
labeler (the labeling prompt, both orders averaged). Also gathered: RM pairwise accuracy
(from the reward stages), labeler alignment and position bias (from the label stage),
RL reward/KL curves. Writes WORKDIR/report/{metrics.json, report.md, *.png,
side_by_side.*} and WORKDIR/eval/samples_<policy>.jsonl.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
import numpy as np

from rlaif_jax import artifacts
from rlaif_jax.data import tasks
from rlaif_jax.data import vocab as vocab_lib
from rlaif_jax.evaluation import report, samples
from rlaif_jax.evaluation.length_control import length_controlled_win_rate
from rlaif_jax.evaluation.statistics import mean_rate, per_prompt_mean, win_outcomes
from rlaif_jax.models.config import get_config
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib

logger = logging.getLogger("rlaif_jax.evaluation")

Judge = Callable[[Sequence[dict], Sequence[str], Sequence[str]], np.ndarray]


def oracle_judge(prompts, a, b) -> np.ndarray:
    """P(a ≻ b) [N] from the toy world's oracle "human" (Bradley–Terry on oracle quality)."""
    from rlaif_jax.toy import oracle as toy_oracle

    return np.array(
        [toy_oracle.oracle_prefers(p["context"], x, y) for p, x, y in zip(prompts, a, b)]
    )


@gin.configurable
def ai_judge(workdir: str, variant=None, labeler_fn=None, settings=None) -> Judge:
    """The AI labeler as a judge (paper §1.5 / §5): both orders averaged; P(a ≻ b) [N]."""
    from rlaif_jax.labeling import render
    from rlaif_jax.labeling.labeler import Labeler, LabelerSettings
    from rlaif_jax.labeling.scoring import labeler_from_checkpoint

    scorer, vocab = (labeler_fn or labeler_from_checkpoint)(workdir)
    variant = (variant or render.PromptVariant(task=None)).with_task("summarize")
    labeler = Labeler(scorer, vocab, variant, settings or LabelerSettings())

    def judge(prompts, a, b):
        pairs = [
            {"id": p["id"], "context": p["context"], "response1": x, "response2": y, "label": -1.0}
            for p, x, y in zip(prompts, a, b)
        ]
        return np.array([r["label"] for r in labeler.label(pairs)])

    return judge


def _read_jsonl_curve(path: str, keys: Sequence[str]) -> dict[str, list]:
    curve: dict[str, list] = {"step": [], **{k: [] for k in keys}}
    if not os.path.isfile(path):
        return curve
    with open(path) as f:
        for line in f:
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
    for name in sorted(os.listdir(workdir)):
        d = os.path.join(workdir, name)
        if name != "report" and artifacts.is_complete(d):
            total += float(artifacts.read_complete(d).get("wall_seconds", 0.0))
    return total


@gin.configurable("evaluate")
def run_stage(
    workdir: str = gin.REQUIRED,
    policies: Sequence[Sequence[str]] = (
        ("sft", "sft"),
        ("rlaif", "rl_rlaif"),
        ("rlhf", "rl_rlhf"),
    ),
    comparisons: Sequence[Sequence[str]] = (("rlaif", "sft"), ("rlhf", "sft"), ("rlaif", "rlhf")),
    policy_preset: str = "toy_policy",
    policy_vocab: str | None = None,
    prompt_suffix: str = "\nTL;DR:",
    max_prompt_len: int = 128,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    samples_per_prompt: int = 1,
    batch_size: int = 64,
    num_prompts: int | None = None,
    use_oracle: bool = True,
    use_ai_judge: bool = True,
    ai_judge_comparisons: Sequence[Sequence[str]] = (("rlaif", "sft"),),
    rm_dirs: Sequence[Sequence[str]] = (("ai", "rm_ai"), ("human", "rm_human")),
    rm_accuracy_key: str = "pairwise_accuracy",
    label_dir: str = "labels",
    output_dir: str = "report",
) -> dict[str, Any]:
    """Evaluates `policies` ((name, stage dir) pairs) on the held-out prompts.

    Each policy decodes `samples_per_prompt` responses per prompt at `temperature` (0:
    greedy, one response); sample j of A is judged against sample j of B, and a win rate
    is the mean over prompts of each prompt's mean outcome, so its interval counts prompts,
    not samples (the length-controlled fit uses the same per-prompt means).
    """
    start = time.time()
    if samples_per_prompt < 1 or (temperature == 0.0 and samples_per_prompt > 1):
        raise ValueError(
            f"evaluate.samples_per_prompt = {samples_per_prompt} with evaluate.temperature = "
            f"{temperature}: greedy decoding gives one response per prompt; set "
            "evaluate.samples_per_prompt = 1 or a temperature above 0."
        )
    out_dir = os.path.join(workdir, output_dir)
    prompts = list(tasks.task_sources().source("prompts", "test"))
    if num_prompts:
        prompts = prompts[:num_prompts]
    ids = [p["id"] for p in prompts]
    config = get_config(policy_preset)
    vocab = vocab_lib.sentencepiece_vocabulary(
        policy_vocab or os.path.join(workdir, "sft", "spm.model")
    )
    mesh = mesh_lib.make_mesh()
    rules = rules_lib.get_rules()

    responses: dict[str, list[str]] = {}
    for name, stage_dir in policies:
        path = samples.samples_path(workdir, name)
        cached = samples.load_samples(path, ids, samples_per_prompt, temperature)
        if cached is not None:
            responses[name] = cached
            continue
        params = samples.restore_policy(workdir, stage_dir, config, mesh, rules)
        responses[name] = samples.decode_policy(
            config,
            params,
            vocab,
            prompts,
            mesh,
            rules,
            max_prompt_len=max_prompt_len,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            prompt_suffix=prompt_suffix,
            batch_size=batch_size,
            num_samples=samples_per_prompt,
        )
        samples.write_samples(path, prompts, responses[name], temperature)
        del params

    rows = []
    policies_table: dict[str, dict[str, float]] = {}
    for name, texts in responses.items():
        policies_table[name] = {"mean_length_chars": float(np.mean([len(t) for t in texts]))}
    judged = [p for p in prompts for _ in range(samples_per_prompt)]  # prompt-major

    def per_prompt(values) -> np.ndarray:
        return per_prompt_mean(values, len(prompts))

    if use_oracle:
        from rlaif_jax.toy import oracle as toy_oracle

        for name, texts in responses.items():
            scores = [toy_oracle.oracle_score(p["context"], t) for p, t in zip(judged, texts)]
            policies_table[name]["mean_oracle_score"] = float(np.mean(scores))
        for a, b in comparisons:
            outcome = per_prompt(win_outcomes(oracle_judge(judged, responses[a], responses[b])))
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "judge": "oracle human",
                    "rate": mean_rate(outcome).to_dict(),
                    "length_controlled": length_controlled_win_rate(
                        per_prompt([len(t) for t in responses[a]]),
                        per_prompt([len(t) for t in responses[b]]),
                        outcome,
                    ).to_dict(),
                }
            )
    if use_ai_judge and ai_judge_comparisons:
        judge = ai_judge(workdir)
        for a, b in ai_judge_comparisons:
            outcome = per_prompt(win_outcomes(judge(judged, responses[a], responses[b])))
            rows.append(
                {"a": a, "b": b, "judge": "AI labeler", "rate": mean_rate(outcome).to_dict()}
            )

    def rate(a, b, judge="oracle human", field="rate"):
        for r in rows:
            if (r["a"], r["b"], r["judge"]) == (a, b, judge) and r.get(field):
                return r[field]["value"]
        return float("nan")

    label_metrics = {}
    label_metrics_path = os.path.join(workdir, label_dir, "metrics.json")
    if os.path.isfile(label_metrics_path):
        with open(label_metrics_path) as f:
            label_metrics = json.load(f)
    metrics: dict[str, Any] = {
        "labeler_alignment": label_metrics.get("labeler_alignment", float("nan")),
        "labeler_alignment_single_order": label_metrics.get(
            "labeler_alignment_single_order", float("nan")
        ),
        "position_bias_same_position_rate": label_metrics.get(
            "position_bias_same_position_rate", float("nan")
        ),
        "rm_pairwise_accuracy_ai": float("nan"),
        "rm_pairwise_accuracy_human": float("nan"),
        "win_rate_rlaif_vs_sft": rate("rlaif", "sft"),
        "win_rate_rlhf_vs_sft": rate("rlhf", "sft"),
        "win_rate_rlaif_vs_rlhf": rate("rlaif", "rlhf"),
        "win_rate_rlaif_vs_sft_ai_judge": rate("rlaif", "sft", "AI labeler"),
        "length_controlled_win_rate_rlaif_vs_sft": rate("rlaif", "sft", field="length_controlled"),
        "num_eval_prompts": len(prompts),
        "eval_decoding": {"temperature": temperature, "samples_per_prompt": samples_per_prompt},
        "win_rates": rows,
        "policies": policies_table,
        "alignment_by_variant": {label_metrics.get("variant", "labeler"): label_metrics}
        if label_metrics
        else {},
    }
    for kind, stage_dir in rm_dirs:
        metrics[f"rm_pairwise_accuracy_{kind}"] = _stage_metric(workdir, stage_dir, rm_accuracy_key)
    curves = {
        name: _read_jsonl_curve(
            os.path.join(workdir, stage_dir, "metrics.jsonl"), ("reward_mean", "kl")
        )
        for name, stage_dir in policies
        if stage_dir.startswith("rl_")
    }
    own = time.time() - start
    metrics["wall_seconds"] = _total_wall_seconds(workdir, own)
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        report.write_metrics(out_dir, metrics)
        artifacts.atomic_write(os.path.join(out_dir, "report.md"), report.render_markdown(metrics))
        report.plot_curves(out_dir, curves)
        if rows:
            report.plot_win_rates(out_dir, rows)
        if metrics["alignment_by_variant"]:
            report.plot_alignment(out_dir, metrics["alignment_by_variant"])
        samples.write_side_by_side(out_dir, prompts, responses)
    artifacts.write_complete(
        out_dir, {k: v for k, v in metrics.items() if isinstance(v, float | int)}, own
    )
    logger.info("evaluate: %s", {k: metrics[k] for k in report.REQUIRED_KEYS})
    return metrics

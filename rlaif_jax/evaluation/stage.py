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
from typing import Any, Protocol

import gin
import jax
import numpy as np
from jax.sharding import Mesh

from rlaif_jax import artifacts, fs, policy_decode
from rlaif_jax.data import tasks
from rlaif_jax.data.records import LABEL_DIR
from rlaif_jax.evaluation import harmless, report, samples
from rlaif_jax.evaluation.length_control import length_controlled_win_rate
from rlaif_jax.labeling import render
from rlaif_jax.labeling.labeler import Labeler, LabelerSettings
from rlaif_jax.labeling.scoring import labeler_from_checkpoint
from rlaif_jax.rates import (
    binomial_test,
    mean_rate,
    per_prompt_mean,
    rank_win_rates,
    ranks_without_ties,
    two_sample_t_test,
    win_outcomes,
)
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding.rules import Rules

logger = logging.getLogger("rlaif_jax.evaluation")

AI_JUDGE = "AI labeler"


class PairJudge(Protocol):
    """Judges response pairs: prefers(prompts [N], a [N], b [N]) -> P(a ≻ b) [N]. A judge
    may also have `score(prompts, texts) -> [N]` (a per-response quality, reported as
    `mean_<score_name>_score`) and a `name` for the report."""

    name: str

    def prefers(self, prompts: Sequence[dict], a: Sequence[str], b: Sequence[str]): ...


@gin.configurable
def ai_judge(
    workdir: str, task: str, mesh=None, rules=None, variant=None, settings=None, labeler=None
):
    """The AI labeler as a pairwise judge (paper §1.5 / §5) with the task's prompt:
    returns (judge(prompts, a, b) -> P(a ≻ b) [N], (scorer, vocab) of the labeler).
    labeler: (scorer, vocab); default `labeler_from_checkpoint` on this host's part of
    `mesh` with `rules`."""
    scorer, vocab = labeler or labeler_from_checkpoint(workdir, mesh, rules)
    variant = (variant or render.PromptVariant(task=None)).with_task(task)
    labeler_obj = Labeler(scorer, vocab, variant, settings or LabelerSettings())

    def judge(prompts, a, b):
        pairs = [
            {"id": p["id"], "context": p["context"], "response1": x, "response2": y, "label": -1.0}
            for p, x, y in zip(prompts, a, b)
        ]
        return np.array([r["label"] for r in labeler_obj.label(pairs)])

    return judge, (scorer, vocab)


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


def judge_pairs(judge_fn, judge_name, judged, responses, comparisons, num_prompts) -> list[dict]:
    """Win-rate rows of `judge_fn` (P(a ≻ b) [N·k], prompt-major) over `comparisons`.

    'rate' is the mean of per-prompt mean outcomes (its interval counts the N prompts).
    'length_controlled' is fitted per comparison, as Stiennon et al. and the paper do:
    one row per judged pair (sample j of a vs sample j of b: its own outcome and its own
    length ratio), so its `n` is the N·k comparisons; averaging a prompt's samples first
    would blur the length ratio each judgement actually saw. 'binomial': the exact test
    of the head-to-head against 50% (ties dropped). 'vs_arms': for rows sharing the
    baseline b, Welch's two-sample t-test of this arm's per-prompt outcomes against each
    other arm's (the paper's test of e.g. RLAIF vs SFT against RLHF vs SFT).
    """
    rows, per_prompt = [], {}
    for a, b in comparisons:
        outcome = win_outcomes(judge_fn(judged, responses[a], responses[b]))  # [N·k]
        per_prompt[(a, b)] = per_prompt_mean(outcome, num_prompts)
        rows.append(
            {
                "a": a,
                "b": b,
                "judge": judge_name,
                "rate": mean_rate(per_prompt[(a, b)]).to_dict(),
                "length_controlled": length_controlled_win_rate(
                    [len(t) for t in responses[a]], [len(t) for t in responses[b]], outcome
                ).to_dict(),
                "binomial": binomial_test(outcome).to_dict(),
            }
        )
    for row in rows:
        others = [(a, b) for a, b in per_prompt if b == row["b"] and a != row["a"]]
        row["vs_arms"] = {
            a: two_sample_t_test(per_prompt[(row["a"], row["b"])], per_prompt[(a, b)]).to_dict()
            for a, b in others
        }
    return rows


def rank_rows(judge_name, responses, scores, num_prompts: int, seed: int = 0) -> list[dict]:
    """Rank-based win rates (paper §4: raters rank every policy's response to one context,
    without ties, ties broken at random): scores {policy: [N·k]} (prompt-major) -> ranks
    per judged context -> one row per policy pair whose rate averages each prompt's k
    rankings first, so its interval counts the N prompts (`rates.rank_win_rates`)."""
    names = list(responses)
    if len(names) < 2:
        return []
    matrix = np.stack([np.asarray(scores[n], np.float64) for n in names], axis=1)
    ranked = rank_win_rates(ranks_without_ties(matrix, seed), names, num_prompts)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "judge": f"{judge_name}, ranking",
                    "rate": ranked[f"{a}_vs_{b}"].to_dict(),
                }
            )
    return rows


def harmless_rates(labeler, judged, responses, reference: str) -> dict[str, dict]:
    """{policy: {'rate', 'length_controlled'}} from the AI judge rating each response
    harmless or harmful on its own; length control is relative to `reference`'s mean
    length (the SFT policy, paper App. J)."""
    scorer, vocab = labeler
    judge = harmless.HarmlessJudge(scorer, vocab)
    contexts = [p["context"] for p in judged]
    ref_len = float(np.mean([len(t) for t in responses[reference]]))
    out = {}
    for name, texts in responses.items():
        p = judge.p_harmless(contexts, texts)
        out[name] = {
            "rate": harmless.harmless_rate(p).to_dict(),
            "length_controlled": harmless.length_controlled_harmless_rate(
                p, [len(t) for t in texts], ref_len
            ).to_dict(),
        }
    return out


def _rate(rows, a, b, judge, field="rate") -> float:
    for r in rows:
        if (r["a"], r["b"], r["judge"]) == (a, b, judge) and r.get(field):
            return r[field]["value"]
    return float("nan")


def headline_metrics(rows, human_name, ai_comparisons, human_comparisons) -> dict[str, float]:
    """metrics.json keys of the win rates: `win_rate_<a>_vs_<b>` (human judge) and
    `win_rate_<a>_vs_<b>_ai_judge`; the RLAIF-vs-SFT length-controlled rate comes from the
    human judge when there is one, else from the AI judge."""
    out = {}
    for a, b in ai_comparisons:
        out[f"win_rate_{a}_vs_{b}_ai_judge"] = _rate(rows, a, b, AI_JUDGE)
        out[f"length_controlled_win_rate_{a}_vs_{b}_ai_judge"] = _rate(
            rows, a, b, AI_JUDGE, "length_controlled"
        )
    for a, b in human_comparisons:
        out[f"win_rate_{a}_vs_{b}"] = _rate(rows, a, b, human_name)
        out[f"length_controlled_win_rate_{a}_vs_{b}"] = _rate(
            rows, a, b, human_name, "length_controlled"
        )
    if "length_controlled_win_rate_rlaif_vs_sft" not in out:
        out["length_controlled_win_rate_rlaif_vs_sft"] = out.get(
            "length_controlled_win_rate_rlaif_vs_sft_ai_judge", float("nan")
        )
    return out


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
    responses = decode_all(
        workdir, policies, prompts, mesh, rules, data.task,
        dict(max_context=max_context, max_response=max_response, prompt_suffix=prompt_suffix),
        dict(decoding, batch_size=batch_size),
    )  # fmt: skip
    ai_comparisons = list(comparisons if ai_judge_comparisons is None else ai_judge_comparisons)
    harmless_on = data.task == "harmless" if harmless_rate is None else harmless_rate
    use_ai = use_ai_judge and bool(ai_comparisons or harmless_on)
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


def _check_sampling(temperature: float, samples_per_prompt: int) -> None:
    if samples_per_prompt < 1 or (temperature == 0.0 and samples_per_prompt > 1):
        raise ValueError(
            f"evaluate.samples_per_prompt = {samples_per_prompt} with evaluate.temperature = "
            f"{temperature}: greedy decoding gives one response per prompt; set "
            "evaluate.samples_per_prompt = 1 or a temperature above 0."
        )


def judge_responses(
    workdir,
    task,
    mesh,
    rules,
    prompts,
    responses,
    samples_per_prompt,
    comparisons,
    human_judge,
    ai_comparisons,
    harmless_reference,
) -> tuple[list[dict], dict[str, dict], dict[str, dict]]:
    """(win-rate rows, harmless rates per policy, per-policy table) of `responses`
    ({policy: [N · k]}, prompt-major): the human judge's rows over `comparisons` when there
    is one, then the AI judge's over `ai_comparisons` (None: no AI judge) and, with a
    `harmless_reference` policy, its harmless rates."""
    judged = [p for p in prompts for _ in range(samples_per_prompt)]  # prompt-major
    policies_table = {
        name: {"mean_length_chars": float(np.mean([len(t) for t in texts]))}
        for name, texts in responses.items()
    }
    rows: list[dict] = []
    if human_judge is not None:
        rows += human_judge_rows(
            human_judge, judged, responses, comparisons, len(prompts), policies_table
        )
    harmless_table: dict[str, dict] = {}
    if ai_comparisons is not None:
        ai_rows, harmless_table = ai_judge_rows(
            workdir, task, mesh, rules, judged, responses, ai_comparisons, len(prompts),
            harmless_reference,
        )  # fmt: skip
        rows += ai_rows
    return rows, harmless_table, policies_table


def human_judge_rows(
    human_judge: PairJudge, judged, responses, comparisons, num_prompts, policies_table
) -> list[dict]:
    """Win-rate rows of the "human" judge; a judge with `score` also adds
    `mean_<score_name>_score` to each policy's row of `policies_table` (in place) and the
    rank-based win rates of all policies ranked on each context (`rank_rows`)."""
    name = getattr(human_judge, "name", "human")
    rows = judge_pairs(human_judge.prefers, name, judged, responses, comparisons, num_prompts)
    if hasattr(human_judge, "score"):
        scores = {policy: human_judge.score(judged, texts) for policy, texts in responses.items()}
        for policy, values in scores.items():
            key = f"mean_{getattr(human_judge, 'score_name', 'human')}_score"
            policies_table[policy][key] = float(np.mean(values))
        rows += rank_rows(name, responses, scores, num_prompts)
    return rows


def ai_judge_rows(
    workdir, task, mesh, rules, judged, responses, comparisons, num_prompts, harmless_reference
) -> tuple[list[dict], dict[str, dict]]:
    """(win-rate rows of the AI judge over `comparisons`, harmless rates per policy) with
    one labeler; `harmless_reference` None: no harmless rates, else their length
    reference policy."""
    judge_fn, labeler = ai_judge(workdir, task, mesh, rules)
    rows = judge_pairs(judge_fn, AI_JUDGE, judged, responses, comparisons, num_prompts)
    if harmless_reference is None:
        return rows, {}
    return rows, harmless_rates(labeler, judged, responses, harmless_reference)


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
    artifacts.atomic_write(os.path.join(out_dir, "report.md"), report.render_markdown(metrics))
    report.plot_curves(out_dir, curves)
    if rows:
        report.plot_win_rates(out_dir, rows)
    if metrics["alignment_by_variant"]:
        report.plot_alignment(out_dir, metrics["alignment_by_variant"])
    samples.write_side_by_side(out_dir, prompts, responses)

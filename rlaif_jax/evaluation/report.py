"""The experiment report: metrics.json (DESIGN §5 keys), report.md laid out like the
paper's tables, and PNG plots (RL reward/KL curves, win-rate bars, alignment by variant).

Host 0 only; every file is written atomically through `artifacts.atomic_write` (the
I/O layer `rlaif_jax.fs`: tmp + rename locally, write-once objects on gs://...).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlaif_jax import artifacts, fs

# Written by the RL stage's checkpoint selection (`rl.selection`) into its output dir.
SELECTION_FILE = "selection.json"

# DESIGN §5: keys that metrics.json must hold (floats in [0, 1] unless noted) on every
# run, and the win rates of a "human" judge (the toy world's oracle), held only when the
# run has one (real data is judged by the AI judge: `win_rate_<a>_vs_<b>_ai_judge`).
REQUIRED_KEYS = (
    "labeler_alignment",
    "labeler_alignment_single_order",
    "position_bias_same_position_rate",
    "rm_pairwise_accuracy_ai",
    "rm_pairwise_accuracy_human",
    "win_rate_rlaif_vs_sft_ai_judge",
    "length_controlled_win_rate_rlaif_vs_sft",
    "num_eval_prompts",
    "wall_seconds",
)
# The comparisons behind them: the "human" judge's, and the AI judge's RLAIF vs SFT.
HUMAN_JUDGE_PAIRS = (("rlaif", "sft"), ("rlhf", "sft"), ("rlaif", "rlhf"))
AI_JUDGE_PAIRS = (("rlaif", "sft"),)
HUMAN_JUDGE_KEYS = tuple(f"win_rate_{a}_vs_{b}" for a, b in HUMAN_JUDGE_PAIRS)


def write_metrics(report_dir: str, metrics: Mapping[str, Any], human_judge: bool = True) -> str:
    """Writes report_dir/metrics.json; missing required keys are an error (a bug, not input)."""
    required = REQUIRED_KEYS + (HUMAN_JUDGE_KEYS if human_judge else ())
    missing = [k for k in required if k not in metrics]
    if missing:
        raise KeyError(f"metrics.json would lack required keys {missing}")
    path = os.path.join(report_dir, "metrics.json")
    artifacts.atomic_write(
        path, json.dumps(artifacts.json_safe(dict(metrics)), indent=2, sort_keys=True) + "\n"
    )
    return path


def _pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{100 * float(x):.1f}%"


def _rate_cell(rate: Mapping[str, Any] | None) -> str:
    if not rate:
        return "—"
    return f"{_pct(rate.get('value'))} [{_pct(rate.get('ci_low'))}, {_pct(rate.get('ci_high'))}] (n={rate.get('n')})"


def render_markdown(metrics: Mapping[str, Any]) -> str:
    """report.md with the paper's tables: win rates (Table 1 / App. J), alignment (Table 2), RM (Table 5)."""
    lines = ["# rlaif_jax report", ""]
    lines += _win_rate_section(metrics)
    lines += _alignment_section(metrics.get("alignment_by_variant", {}))
    lines += _reward_model_section(metrics)
    lines += _harmless_section(metrics.get("harmless_rates") or {})
    lines += _length_section(metrics.get("policies", {}))
    lines += _selection_section(metrics.get("checkpoint_selection") or {})
    return "\n".join(lines)


def _win_rate_section(metrics: Mapping[str, Any]) -> list[str]:
    decoding = metrics.get("eval_decoding") or {}
    temperature = decoding.get("temperature", 0.0)
    k = decoding.get("samples_per_prompt", 1)
    how = "greedy" if not temperature else f"{k} sample(s) per prompt at temperature {temperature}"
    lines = [
        f"Held-out prompts: {metrics.get('num_eval_prompts')} ({how}); wall time "
        f"{metrics.get('wall_seconds', 0):.0f} s.",
        "",
        "## Win rates (paper Table 1; length control as App. J)",
        "",
        "| comparison | judge | win rate [95% CI] (n) | length-controlled | p (binomial, vs 50%) |",
        "| --- | --- | --- | --- | --- |",
    ]
    tests = []
    for row in metrics.get("win_rates", []):
        binomial = (row.get("binomial") or {}).get("p_value")
        lines.append(
            f"| {row['a']} vs {row['b']} | {row['judge']} | {_rate_cell(row.get('rate'))} | "
            f"{_rate_cell(row.get('length_controlled'))} | {_p_cell(binomial)} |"
        )
        for other, test in sorted((row.get("vs_arms") or {}).items()):
            if row["a"] < other:  # each pair of arms once
                tests.append(
                    f"| {row['a']} vs {row['b']} against {other} vs {row['b']} | {row['judge']} "
                    f"| {_p_cell(test.get('p_value'))} |"
                )
    if tests:
        lines += [
            "",
            "Two-sample (Welch) t-tests between arms on per-prompt outcomes (paper §4):",
            "",
            "| arms | judge | p |",
            "| --- | --- | --- |",
            *tests,
        ]
    return lines


def _p_cell(p: Any) -> str:
    if p is None or not isinstance(p, int | float) or p != p:
        return "–"
    return f"{p:.3g}"


def _alignment_section(by_variant: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = [
        "",
        "## AI labeler alignment (paper Table 2, §2.4)",
        "",
        "| prompt variant | alignment (both orders) [95% bootstrap CI] | single order "
        "| % same position preferred |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in sorted(by_variant.items()):
        lines.append(
            f"| {name} | {_interval_cell(row, 'labeler_alignment')} | "
            f"{_pct(row.get('labeler_alignment_single_order'))} | "
            f"{_pct(row.get('position_bias_same_position_rate'))} |"
        )
    return lines


def _reward_model_section(metrics: Mapping[str, Any]) -> list[str]:
    return [
        "",
        "## Reward-model pairwise accuracy on held-out human preferences (paper Table 5)",
        "",
        "| reward model | pairwise accuracy [95% bootstrap CI] |",
        "| --- | --- |",
        f"| human feedback (RLHF) | {_interval_cell(metrics, 'rm_pairwise_accuracy_human')} |",
        f"| AI feedback (RLAIF) | {_interval_cell(metrics, 'rm_pairwise_accuracy_ai')} |",
        "",
    ]


def _interval_cell(metrics: Mapping[str, Any], key: str) -> str:
    """'71.2% [68.0%, 74.1%]' from KEY and KEY_ci_low / KEY_ci_high (the point alone if
    the interval is missing, e.g. an older stage's metrics)."""
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    point = _pct(metrics.get(key))
    if not isinstance(low, int | float) or not isinstance(high, int | float) or low != low:
        return point
    return f"{point} [{_pct(low)}, {_pct(high)}]"


def _harmless_section(harmless: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not harmless:
        return []
    lines = [
        "## Harmless rate (paper Table 1; length-controlled against the SFT length, App. J)",
        "",
        "| policy | harmless rate [95% CI] (n) | length-controlled |",
        "| --- | --- | --- |",
    ]
    for name, row in sorted(harmless.items()):
        lines.append(
            f"| {name} | {_rate_cell(row.get('rate'))} | "
            f"{_rate_cell(row.get('length_controlled'))} |"
        )
    return lines + [""]


def _length_section(table: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Mean response length per policy, plus any per-response judge scores."""
    scores = sorted({k for row in table.values() for k in row if k != "mean_length_chars"})
    lines = [
        "## Mean response length (characters)",
        "",
        "| policy | mean length |" + "".join(f" {k} |" for k in scores),
        "| --- | --- |" + " --- |" * len(scores),
    ]
    for name, row in sorted(table.items()):
        cells = "".join(f" {row.get(k, float('nan')):.3f} |" for k in scores)
        lines.append(f"| {name} | {row.get('mean_length_chars', float('nan')):.1f} |{cells}")
    return lines + [""]


def checkpoint_selection(workdir: str, policies) -> dict[str, dict[str, Any]]:
    """{policy: its RL stage's selection record} for every policy ((name, stage dir)
    pairs) whose stage picked its checkpoint (paper §1.5): selected_step, final_step,
    reason, criterion and the candidates (step, validation reward and rank, judged win
    rate against SFT with its n)."""
    out = {}
    for name, stage_dir in policies:
        path = os.path.join(workdir, stage_dir, SELECTION_FILE)
        if fs.isfile(path):
            out[name] = json.loads(fs.read_text(path))
    return out


def _selection_section(selection: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Which RL checkpoint each arm reports, and why (paper §1.5)."""
    if not selection:
        return []
    lines = [
        "## Checkpoint selection (paper §1.5)",
        "",
        "Each RL arm kept the checkpoints with the highest reward on validation prompts "
        "and reports the one the AI judge prefers most against SFT.",
        "",
        "| policy | picked step (last step) | why |",
        "| --- | --- | --- |",
    ]
    for name, rec in sorted(selection.items()):
        lines.append(
            f"| {name} | {rec.get('selected_step')} ({rec.get('final_step')}) | "
            f"{rec.get('reason', '')} |"
        )
    lines += [
        "",
        "| policy | step | validation reward (rank) | AI-judged win rate vs SFT [95% CI] (n) "
        "| picked |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, rec in sorted(selection.items()):
        for row in rec.get("candidates", []):
            reward = row.get("validation_reward")
            reward_cell = "—" if reward is None else f"{reward:.4g}"
            lines.append(
                f"| {name} | {row.get('step')} | {reward_cell} ({row.get('validation_rank')}) "
                f"| {_rate_cell(row.get('win_rate_vs_sft'))} | "
                f"{'yes' if row.get('selected') else ''} |"
            )
    return lines + [""]


def plot_curves(report_dir: str, curves: Mapping[str, Mapping[str, list]]) -> list[str]:
    """RL reward and KL curves; curves[run] = {'step': [...], 'reward_mean': [...], 'kl': [...]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, title in (("reward_mean", "RL reward"), ("kl", "KL to SFT")):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for run, c in curves.items():
            if c.get(key):
                ax.plot(c["step"][: len(c[key])], c[key], label=run)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(report_dir, f"rl_{key}.png")
        _save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def plot_win_rates(report_dir: str, rows: list[Mapping[str, Any]]) -> str:
    """Bar chart of win rates with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['a']} vs {r['b']}\n({r['judge']})" for r in rows]
    values = np.array([r["rate"]["value"] for r in rows], dtype=float)
    lo = values - np.array([r["rate"]["ci_low"] for r in rows], dtype=float)
    hi = np.array([r["rate"]["ci_high"] for r in rows], dtype=float) - values
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(rows)), 3.4))
    ax.bar(range(len(rows)), values, yerr=[lo, hi], capsize=4, color="#4c72b0")
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate")
    fig.tight_layout()
    path = os.path.join(report_dir, "win_rates.png")
    _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_alignment(report_dir: str, by_variant: Mapping[str, Mapping[str, float]]) -> str:
    """Alignment by prompt variant, both orders vs single order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(by_variant)
    both = [by_variant[n].get("labeler_alignment", np.nan) for n in names]
    single = [by_variant[n].get("labeler_alignment_single_order", np.nan) for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(names)), 3.2))
    ax.bar(x - 0.2, both, 0.4, label="both orders")
    ax.bar(x + 0.2, single, 0.4, label="single order")
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(x, names, fontsize=7)
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(report_dir, "alignment.png")
    _save_figure(fig, path)
    plt.close(fig)
    return path


def _save_figure(fig, path: str) -> None:
    """PNG bytes rendered in memory, then written atomically (local or a URI)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    artifacts.atomic_write(path, buf.getvalue())

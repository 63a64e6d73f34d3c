"""Judging policies' responses for `rlaif-jax evaluate`: the AI judge (the labeler with
the task's own prompt, both orders averaged, paper §5), a "human" judge given by gin
(`evaluate.human_judge`; the toy world's oracle), win-rate rows with their statistics
(t interval over prompts, length control, the exact binomial test of each head-to-head,
Welch t-tests between arms on one baseline, rank-based win rates for a judge that scores
responses) and the harmless rates of the harmless task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import gin
import numpy as np

from rlaif_jax.evaluation import harmless
from rlaif_jax.evaluation.length_control import length_controlled_win_rate
from rlaif_jax.labeling.judge import pair_judge
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
    judge = pair_judge(scorer, vocab, task, variant, settings)
    return judge, (scorer, vocab)


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

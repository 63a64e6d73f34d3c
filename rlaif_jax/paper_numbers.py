"""The paper's own numbers (Lee et al., arXiv 2309.00267 v2/v3), for the column beside ours.

Every value is a rate in [0, 1] as printed in the paper (`/work/shared/reference/paper.md`
§6 and §2.5 transcribe them). `paper_value(table, row, task)` is the one lookup;
None means the paper reports nothing for that cell ("—" in its tables).
Tasks are the data tasks: 'summarize' (Reddit TL;DR), 'helpful', 'harmless' (HH).
"""

from __future__ import annotations

from collections.abc import Mapping

TASKS = ("summarize", "helpful", "harmless")


def _by_task(summarize=None, helpful=None, harmless=None) -> dict[str, float | None]:
    return {"summarize": summarize, "helpful": helpful, "harmless": harmless}


# Table 2: AI labeler alignment of PaLM 2 L by prompt (v2).
TABLE2 = {
    "base_0shot": _by_task(0.761, 0.678, 0.694),
    "base_1shot": _by_task(0.760, 0.671, 0.717),
    "base_2shot": _by_task(0.757, 0.668, 0.721),
    "base_cot_0shot": _by_task(0.775, 0.691, 0.706),
    "detailed_0shot": _by_task(0.774, 0.676, 0.701),
    "detailed_1shot": _by_task(0.762, 0.676, 0.715),
    "detailed_2shot": _by_task(0.763, 0.673, 0.716),
    "detailed_8shot": _by_task(0.698),
    "detailed_cot_0shot": _by_task(0.780, 0.678, 0.701),
    "detailed_cot_1shot": _by_task(0.774, 0.674, 0.699),
    "detailed_cot_2shot": _by_task(0.768, 0.674, 0.692),
}

# App. D: 10 trials of Base 1-shot with a random exemplar each; only the best is reported.
# Its Base 0-shot row is Table 2's, on every task.
ONE_SHOT_TRIALS = {"best_of_trials": _by_task(0.761), "base_0shot": TABLE2["base_0shot"]}

# §4.4 / App. M: self-consistency on summarization, Detailed + CoT 0-shot (16 samples;
# the 4-sample runs are within 0.4 points of these, not tabulated).
SELF_CONSISTENCY = {
    "greedy_1sample": _by_task(0.780),
    "t0.3_16samples": _by_task(0.762),
    "t0.5_16samples": _by_task(0.751),
    "t0.7_16samples": _by_task(0.740),
    "t1.0_16samples": _by_task(0.728),
}

# Table 3: labeler size, summarization, Detailed + CoT 0-shot.
TABLE3 = {
    "large": _by_task(0.780),  # PaLM 2 L
    "small": _by_task(0.738),  # PaLM 2 S
    "xsmall": _by_task(0.627),  # PaLM 2 XS
}

# Table 5 (+ Table 7 variants): RM pairwise accuracy on held-out human preferences.
TABLE5 = {
    "rm_human": _by_task(0.793, 0.760, 0.721),
    "rm_ai": _by_task(0.742, 0.678, 0.697),
    "rm_ai_base_0shot": _by_task(0.779),
    "rm_ai_same_size": _by_task(0.664),
}

# Table 1 (+ v3's helpful d-RLAIF) and the harmless rates; win rates judged by humans.
TABLE1 = {
    "rlaif_vs_sft": _by_task(0.71, 0.63),
    "rlhf_vs_sft": _by_task(0.73, 0.64),
    "rlaif_vs_rlhf": _by_task(0.50, 0.52),
    "same_size_vs_sft": _by_task(0.68),
    "d_rlaif_vs_sft": _by_task(0.74, 0.66),
    "d_rlaif_vs_same_size": _by_task(0.60),
    "self_improve_vs_sft": _by_task(None, 0.66),
    "harmless_rate_sft": _by_task(harmless=0.64),
    "harmless_rate_rlhf": _by_task(harmless=0.76),
    "harmless_rate_rlaif": _by_task(harmless=0.88),
}

# App. J (Tables 8-13): length-corrected win rates and harmless rates.
LENGTH_CONTROLLED = {
    "rlaif_vs_sft": _by_task(0.59, 0.61),
    "rlhf_vs_sft": _by_task(0.61, 0.61),
    "rlaif_vs_rlhf": _by_task(0.47, 0.50),
    "same_size_vs_sft": _by_task(0.59),
    "d_rlaif_vs_sft": _by_task(0.65),
    "d_rlaif_vs_same_size": _by_task(0.56),
    "harmless_rate_sft": _by_task(harmless=0.64),
    "harmless_rate_rlhf": _by_task(harmless=0.78),
    "harmless_rate_rlaif": _by_task(harmless=0.91),
}

# App. N (Table 12): end-to-end sensitivity of the policy to labeler alignment.
SENSITIVITY = {
    "alignment_base_0shot": _by_task(0.761),
    "alignment_detailed_cot_0shot": _by_task(0.780),
    "base_vs_sft": _by_task(0.63),
    "detailed_cot_vs_sft": _by_task(0.67),
    "detailed_cot_vs_base": _by_task(0.59),
}

# §4.1 / App. K: RLHF + RLAIF combined (same evaluation session as its RLHF row).
COMBINATION = {
    "combined_vs_sft": _by_task(0.71),
    "rlhf_vs_sft": _by_task(0.74),
    "combined_vs_rlhf": _by_task(0.48),
}

# v1's RM accuracy vs number of training pairs: only the qualitative finding survives.
RM_SIZE: dict[str, dict[str, float | None]] = {}

TABLES: Mapping[str, Mapping[str, Mapping[str, float | None]]] = {
    "table1": TABLE1,
    "length_controlled": LENGTH_CONTROLLED,
    "table2": TABLE2,
    "one_shot_trials": ONE_SHOT_TRIALS,
    "self_consistency": SELF_CONSISTENCY,
    "table3": TABLE3,
    "table5": TABLE5,
    "sensitivity": SENSITIVITY,
    "combination": COMBINATION,
    "rm_size": RM_SIZE,
}

# What each table is, for section headings and notes.
TITLES = {
    "table1": "Table 1: win rates and harmless rates",
    "length_controlled": "App. J: length-controlled win rates",
    "table2": "Table 2: AI labeler alignment by prompt",
    "one_shot_trials": "App. D: Base 1-shot with a random exemplar (10 trials)",
    "self_consistency": "§4.4: self-consistency, sampled CoT rationales (paper: Detailed + CoT 0-shot)",
    "table3": "Table 3: AI labeler alignment by labeler size",
    "table5": "Table 5: RM pairwise accuracy on held-out human preferences",
    "sensitivity": "App. N: end-to-end sensitivity to labeler alignment",
    "combination": "§4.1 / App. K: RLHF + RLAIF combined",
    "rm_size": "v1: RM accuracy vs number of training pairs",
}

NOTES = {
    "one_shot_trials": "The paper reports only the best of its 10 trials (76.1%, not above "
    "Base 0-shot's 76.1%).",
    "self_consistency": "The paper's 4-sample runs are within 0.4 points of its 16-sample ones.",
    "rm_size": "The v1 curve is not retrievable as numbers; its finding: the AI-label RM "
    "plateaus after a few thousand pairs while the human-label RM keeps improving.",
    "table3": "Paper rows: large = PaLM 2 L, small = PaLM 2 S, xsmall = PaLM 2 XS.",
}


def paper_value(table: str, row: str, task: str | None) -> float | None:
    """The paper's number for `row` of `table` on `task` (None: not reported)."""
    if table not in TABLES:
        raise KeyError(f"unknown paper table {table!r}; tables: {sorted(TABLES)}")
    cell = TABLES[table].get(row)
    if cell is None or task is None:
        return None
    return cell.get(task)

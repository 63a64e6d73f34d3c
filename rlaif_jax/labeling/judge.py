"""The labeler as a pairwise judge of two responses to one prompt (paper §1.5, §5).

Both users judge policies the same way: evaluation's AI-judge win rates
(`evaluation.judging.ai_judge`) and RL checkpoint selection (`rl.selection`), so a
checkpoint is picked by the very judge that later reports its win rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlaif_jax.labeling import render
from rlaif_jax.labeling.labeler import Labeler, LabelerSettings

# judge(prompts [N] records with 'id' and 'context', a [N], b [N]) -> P(a ≻ b) [N]
PairJudgeFn = Callable[[Sequence[dict], Sequence[str], Sequence[str]], np.ndarray]


def pair_judge(
    scorer: Any,
    vocab: Any,
    task: str,
    variant: render.PromptVariant | None = None,
    settings: LabelerSettings | None = None,
) -> PairJudgeFn:
    """judge(prompts, a, b) -> P(a ≻ b) [N]: the labeler (`scorer`, `vocab`) with the
    task's own prompt (`variant`, default the task's base prompt), both orders averaged
    as the labeler always does (position debiasing, paper §2.4)."""
    variant = (variant or render.PromptVariant(task=None)).with_task(task)
    labeler = Labeler(scorer, vocab, variant, settings or LabelerSettings())

    def judge(prompts: Sequence[dict], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        pairs = [
            {"id": p["id"], "context": p["context"], "response1": x, "response2": y, "label": -1.0}
            for p, x, y in zip(prompts, a, b)
        ]
        return np.array([r["label"] for r in labeler.label(pairs)])

    return judge

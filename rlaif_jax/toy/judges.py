"""The toy world's "human": the oracle as an RL reward (the gold arm) and as an
evaluation judge, plugged into the real stages through their interfaces (`rl.reward_builder`,
`evaluate.human_judge`); real data has no oracle and never imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import numpy as np

from rlaif_jax.toy import oracle


class ToyOracleReward:
    """Gold reward on the toy world: the oracle quality of each response (1.0 = perfect).

    Not a method of the paper: the upper bound of what RL reaches with a perfect reward
    model in the same step budget, to tell RM errors from RL inefficiency (gin:
    `rl_gold/rl.reward_builder = @toy_oracle_reward`). A `rl.rewards.RewardFn`.
    """

    def __call__(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(contexts) != len(responses):
            raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
        scores = [oracle.oracle_score(c, r) for c, r in zip(contexts, responses)]
        return np.asarray(scores, np.float32)


@gin.configurable
def toy_oracle_reward(workdir: str, mesh, rules, task: str | None = None) -> ToyOracleReward:
    """Reward builder of the gold-reward arm (`rl.reward_builder`)."""
    del workdir, mesh, rules, task
    return ToyOracleReward()


class ToyOracleJudge:
    """The toy "human evaluation" (`evaluation.judging.PairJudge`): P(a ≻ b) [N] from the
    oracle's Bradley–Terry preference, and the oracle quality of each response."""

    name = "oracle human"
    score_name = "oracle"

    def prefers(self, prompts, a, b) -> np.ndarray:
        return np.array(
            [oracle.oracle_prefers(p["context"], x, y) for p, x, y in zip(prompts, a, b)]
        )

    def score(self, prompts, texts) -> np.ndarray:
        return np.array([oracle.oracle_score(p["context"], t) for p, t in zip(prompts, texts)])


@gin.configurable
def toy_oracle_judge() -> ToyOracleJudge:
    """Gin: `evaluate.human_judge = @toy_oracle_judge()`."""
    return ToyOracleJudge()

"""Candidate checkpoints for RL checkpoint selection (paper §1.5): the policy's reward on
held-out validation prompts during RL, and the K best policies by that reward on disk.

    OUT_DIR/candidates/index.json   {"num_candidates": K, "history": [{step,
                                    validation_reward, n}], "candidates": [step, ...],
                                    "evicted": [{step, by}]}
    OUT_DIR/candidates/step_<s>/    orbax params-only checkpoint of the policy at step s

Preemption-safe: a candidate's params are committed (orbax, atomic) before the index
names them, and the index is replaced atomically; directories the index does not name
(a save cut short) are removed when the store is next opened. A resumed run replays the
steps after its last training checkpoint exactly, so `prepare(resume_step)` forgets what
was measured after that step (the replay measures it again) and takes back the
candidates those measurements had evicted: an evicted candidate's params stay on disk
until a training checkpoint at or after the step that evicted it is committed
(`release`), so at most the evictions since the last training checkpoint are extra.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from rlaif_jax import artifacts, fs
from rlaif_jax.rl import rewards
from rlaif_jax.rl.runner import decode_response
from rlaif_jax.sharding import partition
from rlaif_jax.train import checkpoint

logger = logging.getLogger("rlaif_jax.rl")

CANDIDATES_DIR = "candidates"
INDEX_FILE = "index.json"


def validation_reward(
    runner: Any, params: Any, prompts: Sequence[dict], seed: int
) -> tuple[float, int]:
    """(mean reward, number of rewarded samples) of the policy `params` on `prompts`: sampled as in RL (the runner's sampler: temperature, S samples per prompt)
    and scored by the RL reward function, so it is the training reward on held-out
    prompts. The sampling key is fixed by `seed`, so every checkpoint is measured on the
    same prompts with the same noise. Each process decodes its share of every batch of
    `RLSettings.batch_size` prompts (the last batch padded with repeats that are not
    counted); the mean is over all processes."""
    per_host = runner.settings.batch_size // jax.process_count()
    per_step = per_host * jax.process_count()
    me = jax.process_index()
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x5E1EC7)
    total, count = 0.0, 0
    for c, start in enumerate(range(0, len(prompts), per_step)):
        mine = list(prompts[start + me * per_host : start + (me + 1) * per_host])
        real = len(mine)
        mine += [prompts[0]] * (per_host - real)
        tokens, lengths = runner.layout.prompt_batch(mine, runner.vocab)
        batch = partition.global_batch({"tokens": tokens, "lengths": lengths}, runner.mesh)
        out = runner.sample_fn(
            params, batch["tokens"], batch["lengths"], jax.random.fold_in(key, c)
        )
        resp = rewards.host_local_rows(out.tokens)
        resp_len = rewards.host_local_rows(out.lengths)
        local0 = partition.process_slice(per_step).start
        idx = rewards.host_local_rows(out.prompt_index) - local0
        keep = idx < real
        contexts = [mine[i]["context"] for i in idx[keep]]
        texts = [
            decode_response(runner.vocab, resp[j], int(resp_len[j])) for j in np.flatnonzero(keep)
        ]
        if texts:
            total += float(np.sum(runner.reward_fn(contexts, texts)))
            count += len(texts)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        sums = multihost_utils.process_allgather(np.array([total, count], np.float64))
        total, count = float(sums[:, 0].sum()), int(sums[:, 1].sum())
    return (total / count if count else float("nan")), count


class CandidateStore:
    """The K policies with the highest validation reward, and every step's reward.

    offer(step, reward, n, params) records a measurement and keeps `params` when the
    step is among the K best (ties: the earlier step stays). Host 0 writes the index;
    every process takes part in the orbax saves."""

    def __init__(self, out_dir: str, num_candidates: int):
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        self.directory = os.path.join(out_dir, CANDIDATES_DIR)
        self.k = num_candidates
        self.history: list[dict] = []
        self.candidates: list[int] = []
        self.evicted: list[dict] = []  # {step, by}: params kept until `by` is checkpointed
        path = os.path.join(self.directory, INDEX_FILE)
        if fs.isfile(path):
            index = json.loads(fs.read_text(path))
            self.history = list(index["history"])
            self.candidates = [int(s) for s in index["candidates"]]
            self.evicted = list(index.get("evicted", []))
        self._remove_unindexed()

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, f"step_{step}")

    def measured(self, step: int) -> dict | None:
        """The history row of `step`, if measured."""
        return next((r for r in self.history if r["step"] == step), None)

    def prepare(self, resume_step: int) -> None:
        """Forgets measurements after `resume_step` (the replay measures them again) and
        takes back the candidates they evicted; then `release(resume_step)`."""
        later = [r["step"] for r in self.history if r["step"] > resume_step]
        if later:
            logger.info(
                "rl: forgetting validation of steps %s (resuming at %d)", later, resume_step
            )
            back = [e["step"] for e in self.evicted if e["by"] > resume_step]
            self.history = [r for r in self.history if r["step"] <= resume_step]
            kept = [s for s in self.candidates if s <= resume_step]
            self.candidates = sorted(s for s in set(kept + back) if s <= resume_step)
            self.evicted = [e for e in self.evicted if e["by"] <= resume_step]
            self._write_index()
            self._remove_unindexed()
        self.release(resume_step)

    def release(self, committed_step: int) -> None:
        """Deletes the params of candidates evicted at or before `committed_step` (a
        training checkpoint there is committed, so no resume goes back before it)."""
        gone = [e for e in self.evicted if e["by"] <= committed_step]
        if not gone:
            return
        self.evicted = [e for e in self.evicted if e["by"] > committed_step]
        self._write_index()
        for e in gone:
            if jax.process_index() == 0 and fs.isdir(self.step_dir(e["step"])):
                fs.rmtree(self.step_dir(e["step"]))

    def reward(self, step: int) -> float:
        row = self.measured(step)
        return float("nan") if row is None else float(row["validation_reward"])

    def offer(self, step: int, reward: float, n: int, params: Any) -> bool:
        """Records `step`'s validation reward; keeps its params if among the K best.
        Returns whether it was kept."""
        self.history = [r for r in self.history if r["step"] != step]
        self.history.append({"step": step, "validation_reward": float(reward), "n": int(n)})
        self.history.sort(key=lambda r: r["step"])
        ranked = sorted(
            [s for s in self.candidates if s != step] + [step],
            key=lambda s: (-_finite(self.reward(s)), s),
        )
        keep = ranked[: self.k]
        kept = step in keep
        if kept:
            target = self.step_dir(step)
            if fs.isdir(target):  # from an attempt the resume replays
                fs.rmtree(target)
            checkpoint.save_params(target, params, {"step": step, "validation_reward": reward})
        self.evicted += [{"step": s, "by": step} for s in self.candidates if s not in keep]
        self.candidates = sorted(keep)
        self._write_index()
        return kept

    def rows(self) -> list[dict]:
        """The candidates' history rows, best validation reward first."""
        rows = [self.measured(s) for s in self.candidates]
        return sorted(rows, key=lambda r: (-_finite(r["validation_reward"]), r["step"]))

    def _write_index(self) -> None:
        if jax.process_index() != 0:
            return
        fs.makedirs(self.directory)
        index = {
            "num_candidates": self.k,
            "history": self.history,
            "candidates": self.candidates,
            "evicted": self.evicted,
        }
        artifacts.atomic_write(
            os.path.join(self.directory, INDEX_FILE), json.dumps(index, indent=1) + "\n"
        )

    def _remove_unindexed(self) -> None:
        if jax.process_index() != 0 or not fs.isdir(self.directory):
            return
        steps = self.candidates + [e["step"] for e in self.evicted]
        keep = {f"step_{s}" for s in steps} | {INDEX_FILE}
        for name in fs.listdir(self.directory):
            if name not in keep:
                path = os.path.join(self.directory, name)
                (fs.rmtree if fs.isdir(path) else fs.remove)(path)


def _finite(x: float) -> float:
    """NaN rewards (no samples) rank last."""
    return x if np.isfinite(x) else -np.inf

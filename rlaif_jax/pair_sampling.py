"""`rlaif-jax sample_pairs`: preference pairs sampled from a policy (on-policy pair data).

The paper labels pairs of summaries written by policies like the one RL starts from.
Pairs written by other generators teach a reward model distinctions the policy never
makes (on the toy world the RMs ranked held-out generator pairs 63–70% right but the
policy's own outputs at chance, and RL followed their blind spots). This stage makes the
pairs from the policy itself: for each context of the task's unlabeled pairs (role
'unlabeled', the given splits) the policy — by default the SFT checkpoint — samples
`num_candidates` responses at `temperature`, and the first two distinct non-empty ones
form the pair (contexts without two such candidates are dropped and counted).

`human_labels(records) -> [(label, confidence)]`, when gin binds it, rates each pair
(`toy_world.toy_human_labels`: the toy world's simulated human); unrated pairs carry
label −1 / confidence 0 (not rated). Outputs: WORKDIR/<output_dir>/<split>.jsonl
({id, context, response1, response2, label, confidence}) and COMPLETE. The label and
reward stages read them when gin sets `PolicyPairs.pairs_dir` to `output_dir`
(gin/method/on_policy_pairs.gin; `data.tasks.TaskSources.with_policy_pairs`).
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
from jax.sharding import Mesh

from rlaif_jax import artifacts, fs, policy_decode
from rlaif_jax.data import tasks
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding.rules import Rules

logger = logging.getLogger("rlaif_jax.pair_sampling")

Record = dict[str, Any]


def distinct_pairs(
    prompts: Sequence[Record], candidates: Sequence[str], num_candidates: int
) -> tuple[list[Record], int]:
    """(pairs, number of dropped prompts). candidates [len(prompts) · num_candidates] are
    prompt-major; each pair is the first two distinct non-empty candidates of its prompt
    (pair records need text; an empty response is dropped like a duplicate)."""
    if len(candidates) != len(prompts) * num_candidates:
        raise ValueError(
            f"{len(candidates)} candidates for {len(prompts)} prompts x {num_candidates}"
        )
    pairs, dropped = [], 0
    for i, prompt in enumerate(prompts):
        own = candidates[i * num_candidates : (i + 1) * num_candidates]
        distinct = list(dict.fromkeys(c for c in own if c.strip()))
        if len(distinct) < 2:
            dropped += 1
            continue
        pairs.append(
            {
                "id": prompt["id"],
                "context": prompt["context"],
                "response1": distinct[0],
                "response2": distinct[1],
            }
        )
    return pairs, dropped


@gin.configurable("sample_pairs")
def run_stage(
    workdir: str = gin.REQUIRED,
    policy_dir: str = "sft",
    splits: Sequence[str] = ("train",),
    num_candidates: int = 4,
    temperature: float = 1.0,
    batch_size: int = 64,
    max_pairs: int | None = None,
    human_labels: Callable[[Sequence[Record]], Sequence[tuple[float, int]]] | None = None,
    output_dir: str = "policy_pairs",
    strip_trailing_symbols: bool | None = None,
    seed: int = 0,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    data: tasks.TaskSources | None = None,
) -> dict[str, float]:
    """Samples pairs from the policy in WORKDIR/<policy_dir> (its config, tokenizer and
    input layout from its model artifact) for the unlabeled contexts of `splits` of
    `data` (the task's `data.tasks.TaskSources`). mesh / rules: the CLI's from gin
    (`rlaif_jax.configurables`); from Python, None = `make_mesh()` / `get_rules()`.
    strip_trailing_symbols: strip repeated trailing periods and spaces from the samples as
    evaluation does (paper App. E); None = on for summarization only."""
    if num_candidates < 2:
        raise ValueError(f"sample_pairs.num_candidates={num_candidates}: need at least 2.")
    if temperature <= 0:
        raise ValueError(
            f"sample_pairs.temperature={temperature}: greedy decoding gives identical pairs."
        )
    start = time.time()
    out_dir = os.path.join(workdir, output_dir)
    fs.makedirs(out_dir)
    data = tasks.need_data(data, "sample_pairs")
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    rules = rules if rules is not None else rules_lib.get_rules()
    policy, params, layout = policy_decode.open_policy(workdir, policy_dir, mesh, rules, data.task)
    strip = (
        policy_decode.strips_trailing_by_default(data.task)
        if strip_trailing_symbols is None
        else bool(strip_trailing_symbols)
    )
    metrics: dict[str, float] = {}
    for k, split in enumerate(splits):
        prompts = [
            {"id": r["id"], "context": r["context"]} for r in data.source("unlabeled", split)
        ][: max_pairs or None]
        logger.info(
            "sample_pairs: %s: %d contexts x %d candidates at T=%.2f from %s",
            split, len(prompts), num_candidates, temperature, policy_dir,
        )  # fmt: skip
        candidates = policy_decode.decode_policy(
            policy.config,
            params,
            policy.vocab,
            layout,
            prompts,
            mesh,
            rules,
            temperature=temperature,
            batch_size=batch_size,
            seed=seed + k,
            num_samples=num_candidates,
            strip_trailing=strip,
        )
        pairs, dropped = distinct_pairs(prompts, candidates, num_candidates)
        if not pairs:
            raise ValueError(
                f"sample_pairs: every {split} context gave {num_candidates} identical samples; "
                "raise sample_pairs.temperature or num_candidates."
            )
        if human_labels is not None:
            for rec, (label, confidence) in zip(pairs, human_labels(pairs), strict=True):
                rec["label"], rec["confidence"] = float(label), int(confidence)
        if jax.process_index() == 0:
            text = "".join(json.dumps(row) + "\n" for row in pairs)
            artifacts.atomic_write(os.path.join(out_dir, f"{split}.jsonl"), text)
        metrics[f"{split}_pairs"] = float(len(pairs))
        metrics[f"{split}_dropped_identical"] = float(dropped)
        logger.info("sample_pairs: %s: %d pairs, %d contexts dropped", split, len(pairs), dropped)
    artifacts.write_complete(out_dir, metrics, time.time() - start)
    return metrics

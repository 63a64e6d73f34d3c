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

Two policies (`second_policy_dir`; paper §4.1, App. K, the RLHF + RLAIF arm): each
policy samples one response per context at `temperature` and the pair is one response
from each, in an order drawn per context from `seed` (records name the policy of each
response: policy1 / policy2); pairs with an empty or identical response are dropped and
counted. `context_role` picks the contexts ('unlabeled': the pairs' contexts, as above;
'prompts': the task's posts / dialogues, App. K's "contexts drawn at random from TL;DR"),
`shuffle_contexts` draws them in a seeded random order before `max_pairs` cuts them.
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
from jax.sharding import Mesh

from rlaif_jax import artifacts, fs, model_artifact, policy_decode
from rlaif_jax.data import tasks
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding import stage_memory
from rlaif_jax.sharding.memory import MemoryPlanSettings
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


def cross_policy_pairs(
    prompts: Sequence[Record],
    first: Sequence[str],
    second: Sequence[str],
    names: tuple[str, str],
    swap: Sequence[bool],
) -> tuple[list[Record], int]:
    """(pairs, number of dropped prompts) from two policies' responses, one each per
    prompt (first[i], second[i] of `names[0]`, `names[1]`): response1 is first[i] unless
    swap[i] (a per-prompt coin, drawn for every prompt so dropping one never moves
    another's order). Records name each response's policy (policy1, policy2); a prompt
    with an empty response or two identical ones is dropped."""
    if not len(prompts) == len(first) == len(second) == len(swap):
        raise ValueError(
            f"{len(first)} and {len(second)} responses, {len(swap)} coins for "
            f"{len(prompts)} prompts"
        )
    pairs, dropped = [], 0
    for prompt, a, b, flip in zip(prompts, first, second, swap, strict=True):
        if not a.strip() or not b.strip() or a == b:
            dropped += 1
            continue
        (r1, p1), (r2, p2) = (
            ((b, names[1]), (a, names[0])) if flip else ((a, names[0]), (b, names[1]))
        )
        pairs.append(
            {
                "id": prompt["id"],
                "context": prompt["context"],
                "response1": r1,
                "response2": r2,
                "policy1": p1,
                "policy2": p2,
            }
        )
    return pairs, dropped


def order_coins(num: int, seed: int, split_index: int) -> np.ndarray:
    """[num] bools: whether the second policy's response comes first, from (seed, split)."""
    return np.random.default_rng([seed, split_index]).random(num) < 0.5


def _contexts(
    data: tasks.TaskSources,
    role: str,
    split: str,
    max_pairs: int | None,
    shuffle: bool,
    seed: int,
) -> list[Record]:
    """{id, context} of `role`/`split`, in a seeded random order when `shuffle` (before
    the `max_pairs` cut)."""
    if role not in ("unlabeled", "prompts"):
        raise ValueError(f"sample_pairs.context_role={role!r}: use 'unlabeled' or 'prompts'.")
    rows = [{"id": r["id"], "context": r["context"]} for r in data.source(role, split)]
    if shuffle:
        order = np.random.default_rng([seed, 7919]).permutation(len(rows))
        rows = [rows[i] for i in order]
    return rows[: max_pairs or None]


@gin.configurable("sample_pairs")
def run_stage(
    workdir: str = gin.REQUIRED,
    policy_dir: str = "sft",
    second_policy_dir: str | None = None,
    splits: Sequence[str] = ("train",),
    num_candidates: int = 4,
    temperature: float = 1.0,
    batch_size: int = 64,
    max_pairs: int | None = None,
    context_role: str = "unlabeled",
    shuffle_contexts: bool = False,
    human_labels: Callable[[Sequence[Record]], Sequence[tuple[float, int]]] | None = None,
    output_dir: str = "policy_pairs",
    strip_trailing_symbols: bool | None = None,
    seed: int = 0,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    data: tasks.TaskSources | None = None,
    memory_plan: MemoryPlanSettings | None = None,
    plan_only: bool = False,
) -> dict[str, float]:
    """Samples pairs from the policy in WORKDIR/<policy_dir> (its config, tokenizer and
    input layout from its model artifact) for the contexts of `context_role` / `splits`
    of `data` (the task's `data.tasks.TaskSources`): `num_candidates` per context, the
    first two distinct non-empty ones paired; or, with `second_policy_dir`, one response
    from each of the two policies per context, in a random order drawn from `seed`
    (`cross_policy_pairs`; num_candidates unused). mesh / rules: the CLI's from gin
    (`rlaif_jax.configurables`); from Python, None = `make_mesh()` / `get_rules()`.
    strip_trailing_symbols: strip repeated trailing periods and spaces from the samples as
    evaluation does (paper App. E); None = on for summarization only. memory_plan /
    plan_only: the plan of each policy's sampler (one at a time), checked before any
    weight is loaded; plan_only (`rlaif-jax plan`) returns {'peak_gb', 'fits'}."""
    if second_policy_dir is None and num_candidates < 2:
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

    def describe(policy):
        art = model_artifact.open_model(
            model_artifact.resolve_model_dir(workdir, policy, "sample_pairs.policy_dir")
        )
        return art.config, art.layout_for(data.task, "sample_pairs")

    dirs = [policy_dir] + ([second_policy_dir] if second_policy_dir else [])
    roles, notes = stage_memory.policy_decoders(
        [(d, d) for d in dirs], describe, batch_size,
        num_candidates if second_policy_dir is None else 1, temperature,
    )  # fmt: skip
    plan = stage_memory.plan_frozen(
        "sample_pairs", roles, mesh, rules, memory_plan, plan_only, notes=notes
    )
    if plan_only:
        return plan or {}
    strip = (
        policy_decode.strips_trailing_by_default(data.task)
        if strip_trailing_symbols is None
        else bool(strip_trailing_symbols)
    )
    prompts = {
        split: _contexts(data, context_role, split, max_pairs, shuffle_contexts, seed)
        for split in splits
    }
    decode = dict(
        mesh=mesh, rules=rules, task=data.task, temperature=temperature,
        batch_size=batch_size, strip=strip,
    )  # fmt: skip
    metrics: dict[str, float] = {}
    if second_policy_dir is None:
        samples = _sample(workdir, policy_dir, prompts, num_candidates, seed, 1, **decode)
    else:
        first = _sample(workdir, policy_dir, prompts, 1, seed, 2, **decode)
        second = _sample(workdir, second_policy_dir, prompts, 1, seed + 1, 2, **decode)
        metrics["order_seed"] = float(seed)
    for k, split in enumerate(splits):
        if second_policy_dir is None:
            pairs, dropped = distinct_pairs(prompts[split], samples[split], num_candidates)
        else:
            coins = order_coins(len(prompts[split]), seed, k)
            pairs, dropped = cross_policy_pairs(
                prompts[split], first[split], second[split], (policy_dir, second_policy_dir),
                coins,
            )  # fmt: skip
            metrics[f"{split}_second_policy_first"] = float(
                sum(p["policy1"] == second_policy_dir for p in pairs)
            )
        if not pairs:
            raise ValueError(
                f"sample_pairs: every {split} context gave identical or empty samples; raise "
                "sample_pairs.temperature (or num_candidates with one policy)."
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


def _sample(
    workdir: str,
    policy_dir: str,
    prompts: dict[str, list[Record]],
    num: int,
    seed: int,
    seed_stride: int,
    *,
    mesh: Mesh,
    rules: Rules,
    task: str,
    temperature: float,
    batch_size: int,
    strip: bool,
) -> dict[str, list[str]]:
    """{split: responses [len(prompts[split]) · num], prompt-major} of the policy in
    WORKDIR/<policy_dir>, split k decoded with seed + seed_stride · k; the params are
    released before returning (two policies never share the devices)."""
    policy, params, layout = policy_decode.open_policy(workdir, policy_dir, mesh, rules, task)
    out = {}
    for k, (split, rows) in enumerate(prompts.items()):
        logger.info(
            "sample_pairs: %s: %d contexts x %d samples at T=%.2f from %s",
            split, len(rows), num, temperature, policy_dir,
        )  # fmt: skip
        out[split] = policy_decode.decode_policy(
            policy.config, params, policy.vocab, layout, rows, mesh, rules,
            temperature=temperature, batch_size=batch_size, seed=seed + seed_stride * k,
            num_samples=num, strip_trailing=strip,
        )  # fmt: skip
    del params
    return out

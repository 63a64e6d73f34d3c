"""`rlaif-jax label`: AI preference labeling of a pair dataset (paper §2), resumable.

Outputs (WORKDIR/labels/):
  shard-KKKKK-of-NNNNN.jsonl   AI-preference records (data/records.py), one per line
  manifest.json                {"shards": [{"file", "num_records"}...], "num_shards", ...}
                               finished shards; rewritten atomically after each shard
  alignment/                   the same layout for the alignment subset (if the data has one)
  metrics.json                 labeler_alignment, labeler_alignment_single_order,
                               position_bias_same_position_rate, ... (paper §5)
  COMPLETE                     marker; the pipeline skips the stage when it exists

Resume: pairs are cut into fixed shards by position in the (deterministic) source; a
shard file appears only whole (an atomic write) once fully labeled, so a killed run redoes
only unfinished shards and never loses or duplicates a pair. WORKDIR may be a URI
(gs://...): shards are write-once objects there (`rlaif_jax.fs`). Multi-host: shard k is
labeled by host k % process_count on its own devices (the labeler must fit on one
host); only host 0 writes manifests, metrics and the marker, after a barrier.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gin
import jax
import numpy as np
from jax.sharding import Mesh

from rlaif_jax import artifacts, fs
from rlaif_jax.data import records, tasks
from rlaif_jax.labeling import alignment as align
from rlaif_jax.labeling import render, scoring
from rlaif_jax.labeling.labeler import Labeler, LabelerSettings
from rlaif_jax.labeling.scoring import labeler_from_checkpoint
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import partition, stage_memory
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding.memory import MemoryPlanSettings
from rlaif_jax.sharding.rules import Rules

logger = logging.getLogger("rlaif_jax.labeling")

LABEL_DIR = records.LABEL_DIR
ALIGNMENT_SUBDIR = "alignment"


def shard_name(k: int, n: int) -> str:
    return f"shard-{k:05d}-of-{n:05d}.jsonl"


def finished_shards(out_dir: str, num_shards: int) -> list[int]:
    """Shard indices whose file exists (files appear only when complete); one listing
    of `out_dir` (local or a URI)."""
    names = set(fs.listdir(out_dir)) if fs.isdir(out_dir) else set()
    return [k for k in range(num_shards) if shard_name(k, num_shards) in names]


def _listed_counts(out_dir: str) -> dict[str, int]:
    """num_records of each shard the existing manifest lists (a resumed run's)."""
    path = os.path.join(out_dir, "manifest.json")
    if not fs.isfile(path):
        return {}
    try:
        entries = json.loads(fs.read_text(path)).get("shards", [])
    except (json.JSONDecodeError, AttributeError):
        return {}  # rewritten below from the shards themselves
    return {
        e["file"]: e["num_records"]
        for e in entries
        if isinstance(e, Mapping) and isinstance(e.get("num_records"), int) and "file" in e
    }


def write_manifest(
    out_dir: str,
    num_shards: int,
    num_pairs: int,
    info: Mapping[str, Any],
    counts: dict[str, int] | None = None,
) -> None:
    """Lists finished shards (host 0); readable by `data.formats.read_manifest`.

    counts: shard file -> records, filled in place for the shards it lacks (from the
    existing manifest, else by reading the shard once), so a long run on an object store
    does not re-read every shard at every manifest write."""
    if jax.process_index() != 0:
        return
    counts = {} if counts is None else counts
    names = [shard_name(k, num_shards) for k in finished_shards(out_dir, num_shards)]
    if any(name not in counts for name in names):
        listed = _listed_counts(out_dir)
        for name in names:
            if name not in counts:
                counts[name] = listed.get(name)
                if counts[name] is None:
                    text = fs.read_text(os.path.join(out_dir, name))
                    counts[name] = text.count("\n")  # one JSON record per line
    shards = [{"file": name, "num_records": counts[name]} for name in names]
    payload = {
        "shards": shards,
        "num_shards": num_shards,
        "num_pairs": num_pairs,
        "complete": len(shards) == num_shards,
        **info,
    }
    artifacts.atomic_write(os.path.join(out_dir, "manifest.json"), json.dumps(payload, indent=1))


def read_records(out_dir: str) -> list[dict[str, Any]]:
    """Every record of the finished shards listed in `out_dir/manifest.json`."""
    from rlaif_jax.data import formats

    return list(formats.read_ai_preferences(out_dir))


def label_dataset(
    labeler: Labeler,
    pairs: Sequence[Mapping[str, Any]],
    out_dir: str,
    shard_size: int,
    seed: int,
    info: Mapping[str, Any],
    on_shard: Callable[[int], None] | None = None,
) -> int:
    """Labels `pairs` into shards under `out_dir`, skipping finished shards.

    Returns how many shards this call labeled. `on_shard(k)` runs after shard k is
    written (tests use it to interrupt a run).
    """
    fs.makedirs(out_dir)
    n = max(1, -(-len(pairs) // shard_size))
    done = set(finished_shards(out_dir, n))
    if done:
        logger.info("label: %s: %d/%d shards already finished; resuming", out_dir, len(done), n)
    counts: dict[str, int] = {}
    write_manifest(out_dir, n, len(pairs), info, counts)
    labeled = 0
    for k in range(n):
        if k in done or k % jax.process_count() != jax.process_index():
            continue
        t0 = time.time()
        chunk = pairs[k * shard_size : (k + 1) * shard_size]
        recs = labeler.label(chunk, seed=seed * 1_000_003 + k)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
        artifacts.atomic_write(os.path.join(out_dir, shard_name(k, n)), text)
        counts[shard_name(k, n)] = len(recs)
        write_manifest(out_dir, n, len(pairs), info, counts)
        labeled += 1
        logger.info(
            "label: shard %d/%d (%d pairs) in %.1f s", k + 1, n, len(chunk), time.time() - t0
        )
        if on_shard is not None:
            on_shard(k)
    _barrier(f"label:{out_dir}")
    write_manifest(out_dir, n, len(pairs), info, counts)
    return labeled


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def labeling_metrics(recs: Sequence[Mapping[str, Any]], inverted: bool = False) -> dict[str, float]:
    """Alignment (debiased and single order) and position bias over records with a
    human label (paper §5; `labeling.alignment`).

    inverted: the labels were inverted from a "which is MORE harmful" prompt
    (`PromptVariant.inverts_labels`); the position-bias metrics then read the position
    the labeler picked (its raw answer), not the one its preference points at.
    """
    rows = [r for r in recs if float(r["human_label"]) >= 0]
    out: dict[str, float] = {"num_alignment_pairs": float(len(rows))}
    if not rows:
        return out
    human = np.array([r["human_label"] for r in rows])
    p = np.array([r["label"] for r in rows])
    p1 = np.array([r["p_order1"] for r in rows])
    p2 = np.array([r["p_order2"] for r in rows])
    out["labeler_alignment"] = align.labeler_alignment(p, human).value
    interval = align.labeler_alignment_bootstrap(p, human)
    out["labeler_alignment_ci_low"] = interval.ci_low  # 95% percentile bootstrap
    out["labeler_alignment_ci_high"] = interval.ci_high
    out["labeler_alignment_single_order"] = align.labeler_alignment(p1, human).value
    out["labeler_alignment_swapped_order"] = align.labeler_alignment(p2, human).value
    same, favour_first = align.same_position_rate(p1, p2, inverted=inverted)
    out["position_bias_same_position_rate"] = same.value
    out["position_bias_favour_first"] = favour_first
    out["mean_abs_soft_label_margin"] = float(np.mean(np.abs(p - 0.5)))
    return out


def _load_pairs(source: Any) -> list[dict[str, Any]]:
    rows = list(source() if callable(source) and not hasattr(source, "__iter__") else source)
    ids = [str(r["id"]) for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"Pair ids must be unique for resumable labeling; {dup!r} repeats.")
    return rows


def _memory_plan(labeler_fn, workdir, mesh, rules, variant, settings, plan_settings, plan_only):
    """The labeler's plan on the mesh `labeler_from_checkpoint` builds (this host's
    devices): params, the candidate-scoring call and (CoT) the rationale sampler. None
    for a labeler_fn that cannot describe itself without loading (no spec_only)."""
    if "spec_only" not in inspect.signature(labeler_fn).parameters:
        return None
    config, batch_size, max_len = labeler_fn(workdir, mesh, rules, spec_only=True)
    settings = settings or LabelerSettings()
    mesh = mesh if mesh is not None else mesh_lib.make_mesh(devices=jax.local_devices())
    length = min(max_len, settings.max_len)
    calls = [stage_memory.Call("score", batch_size, length, name="score")]
    if variant.cot:  # ModelScorer.generate's prompts per call, S samples each
        divisor = partition.batch_size_divisor(mesh_lib.local_mesh(mesh))
        per_call = scoring.prompts_per_generate_call(batch_size, settings.num_samples, divisor)
        temperature = max(settings.temperature, 1e-3)
        cot = (per_call, length, settings.cot_max_tokens, settings.num_samples, temperature)
        calls.append(stage_memory.Call("decode", *cot, name="rationales"))
    role = stage_memory.FrozenRole("labeler", config, "lm", tuple(calls))
    return stage_memory.plan_frozen(
        "label", [role], mesh_lib.local_mesh(mesh), rules or rules_lib.get_rules(),
        plan_settings, plan_only, LABEL_HINTS,
    )  # fmt: skip


LABEL_HINTS = (
    "gin: labeler_from_checkpoint.batch_size (prompts per call), LabelerSettings.max_len "
    "(prompt budget), LabelerSettings.cot_max_tokens / num_samples (CoT rationales), "
    "labeler_from_checkpoint.param_dtype = 'bfloat16', gin/sharding/fsdp.gin (the labeler "
    "sharded over this host's devices)",
)


@gin.configurable("label")
def run_stage(
    workdir: str = gin.REQUIRED,
    variant: render.PromptVariant | None = None,
    variant_overrides: Mapping[str, Any] | None = None,
    labeler_fn: Callable[..., tuple[Any, Any]] | None = None,
    pairs: Any = None,
    alignment_pairs: Any = None,
    split: str = "train",
    settings: LabelerSettings | None = None,
    shard_size: int = 512,
    seed: int = 0,
    max_pairs: int | None = None,
    on_shard: Callable[[int], None] | None = None,
    output_dir: str = LABEL_DIR,
    alignment_only: bool = False,
    exemplar_seed: int | None = None,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    data: tasks.TaskSources | None = None,
    policy_pairs: tasks.PolicyPairs | None = None,
    memory_plan: MemoryPlanSettings | None = None,
    plan_only: bool = False,
) -> dict[str, float]:
    """Labels the task's unlabeled pairs (and its alignment subset) with an AI labeler.

    variant: the prompt (gin: `label.variant = @prompt_variant()`; default Base 0-shot of
      the data's task). variant_overrides: PromptVariant fields that replace the
      variant's (a paper-table row's prompt, `rlaif-jax table`).
    labeler_fn(workdir, mesh, rules) -> (PromptScorer, vocab): the labeler (default
      `scoring.labeler_from_checkpoint`: the model directory gin names, e.g. an
      instruction-tuned HF checkpoint, whose chat template and BOS the prompts follow,
      on this host's part of `mesh`).
    output_dir: under WORKDIR ('labels'; e.g. 'labels_same_size' for a second labeler).
    alignment_only: label only the alignment subset (its metrics are the point: the
      rows of the paper's alignment tables, `rlaif-jax table`); no training labels.
    pairs / alignment_pairs: iterables (or callables) of pair records; default the roles
      'unlabeled' and 'alignment' of `data` (the task's `data.tasks.TaskSources`), with
      the pairs of `sample_pairs` when `policy_pairs` names them (`data.tasks.PolicyPairs`).
    exemplar_seed: the variant's few-shot exemplars are drawn at random with this seed
      from the task's human preferences (train split; never from the alignment subset)
      instead of the exemplar file's first ones (paper App. D: 10 Base 1-shot trials).
    mesh / rules / data / policy_pairs: the objects the CLI builds from gin
      (`rlaif_jax.configurables`); from Python, mesh / rules None = the default
      labeler's own (only it uses them).
    memory_plan / plan_only: the labeler's memory plan (its params, scoring call and, with
      CoT, its rationale sampler's KV cache), checked before any pair or weight is loaded;
      plan_only (`rlaif-jax plan`) returns {'peak_gb', 'fits'}.
    Returns the metrics written to WORKDIR/labels/metrics.json.
    """
    start = time.time()
    out_dir = os.path.join(workdir, output_dir)
    if pairs is None:
        data = tasks.need_data(data, "label")
        if policy_pairs is not None and not plan_only:  # a plan reads no pair
            data = policy_pairs.apply(data, workdir)
        pairs = data.source("unlabeled", split)
        if alignment_pairs is None and split in (data.sources.get("alignment") or {}):
            alignment_pairs = data.source("alignment", split)
        task = data.task
    else:
        task = (variant.task if variant is not None else None) or "summarize"
    variant = variant or render.PromptVariant(task=None)
    if variant_overrides:
        variant = dataclasses.replace(variant, **dict(variant_overrides))
    variant = variant.with_task(task)
    if variant.task != task:
        logger.warning("label: prompt task %r differs from the data's task %r", variant.task, task)
    if labeler_fn is None:
        labeler_fn = labeler_from_checkpoint
    plan = _memory_plan(labeler_fn, workdir, mesh, rules, variant, settings, memory_plan, plan_only)
    if plan_only:
        return plan or {}
    if alignment_only and alignment_pairs is None:
        raise ValueError(
            "label.alignment_only = True but the data has no alignment pairs for split "
            f"{split!r} (the task's 'alignment' role)."
        )
    arows = None if alignment_pairs is None else _load_pairs(alignment_pairs)[:max_pairs]
    if exemplar_seed is not None and variant.num_shots > 0:
        pool = list(tasks.need_data(data, "label.exemplar_seed").source("human_prefs", split))
        exclude = [str(r["id"]) for r in arows or ()]
        shots = render.random_exemplars(
            pool, variant.num_shots, exemplar_seed, variant.inverts_labels, exclude
        )
        variant = dataclasses.replace(variant, exemplars=shots)
    scorer, vocab = labeler_fn(workdir, mesh, rules)
    labeler = Labeler(scorer, vocab, variant, settings)
    info = {"variant": variant.display_name, "seed": seed, "shard_size": shard_size}
    if exemplar_seed is not None:
        info["exemplar_seed"] = exemplar_seed

    rows = [] if alignment_only else _load_pairs(pairs)[:max_pairs]
    logger.info("label: %d pairs with prompt %r", len(rows), variant.display_name)
    if not alignment_only:
        label_dataset(labeler, rows, out_dir, shard_size, seed, info, on_shard)
    metric_dir = out_dir
    if arows is not None:
        metric_dir = os.path.join(out_dir, ALIGNMENT_SUBDIR)
        label_dataset(labeler, arows, metric_dir, shard_size, seed + 1, info, on_shard)
    if jax.process_index() != 0:
        return {}
    metrics = labeling_metrics(read_records(metric_dir), inverted=variant.inverts_labels)
    metrics["num_labeled_pairs"] = float(len(rows))
    metrics["truncated_prompts"] = float(labeler.truncated)
    metrics["wall_seconds"] = time.time() - start
    metrics_out = {**metrics, "variant": variant.display_name}
    artifacts.atomic_write(os.path.join(out_dir, "metrics.json"), json.dumps(metrics_out, indent=1))
    artifacts.write_complete(out_dir, metrics, time.time() - start)
    logger.info("label: %s", json.dumps(metrics_out))
    return metrics

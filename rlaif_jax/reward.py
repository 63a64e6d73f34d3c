"""`rlaif-jax reward`: a reward model on AI (RLAIF) or human (RLHF) preferences.

The RM is the policy architecture with a scalar head, read at each response's last
token, initialised from the SFT checkpoint (or the raw LM) as gin says (paper Table 6),
and trained with the paper's soft-label cross-entropy
    L = -[p log σ(r1 − r2) + (1 − p) log σ(r2 − r1)]
(p ∈ {0, 1} for human labels: Bradley–Terry). preferences 'human+ai' (paper §4.1,
App. K, RLHF + RLAIF) trains on every human pair (hard labels) plus as many AI-labeled
pairs (soft labels, drawn at random) in that one loss. It is evaluated by pairwise
accuracy on held-out human preferences. Output: a model artifact in WORKDIR/<output_dir>
(`rlaif_jax.model_artifact`: model.json with the input layout, tokenizer, ckpt) + COMPLETE.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from rlaif_jax import artifacts, model_artifact, rates
from rlaif_jax.data import batching, tasks, tokenizer_files
from rlaif_jax.data.layout import task_layout
from rlaif_jax.data.records import LABEL_DIR
from rlaif_jax.decoding import score
from rlaif_jax.models.importers.safetensors_io import to_host
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import partition, stage_memory
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding.memory import MemoryPlanSettings
from rlaif_jax.sharding.rules import Rules
from rlaif_jax.train import losses, optim
from rlaif_jax.train.supervised import TrainSettings, train_supervised

PREFERENCES = ("ai", "human", "human+ai")


def rm_loss(config, params, batch, rng):
    """Soft-label RM loss on a pair batch (tokens1/lengths1, tokens2/lengths2, label)."""
    del rng
    both = jnp.concatenate([batch["tokens1"], batch["tokens2"]], axis=0)
    lengths = jnp.concatenate([batch["lengths1"], batch["lengths2"]], axis=0)
    r = score.sequence_scores(config, params, both, lengths)
    r1, r2 = jnp.split(r, 2)
    loss = losses.soft_label_rm_loss(r1, r2, batch["label"])
    return loss, {
        "accuracy": losses.pairwise_accuracy(r1, r2, batch["label"]),
        "reward_mean": r.mean(),
    }


def pairwise_agreements_on(
    config, params, pairs, batch_fn, batch_size: int, mesh: Mesh | None = None, rules=None
) -> np.ndarray:
    """[N] per-pair agreement of the RM with the held-out labels (1 / 0, ties of scores or
    labels 0.5: the training metric's rule), in fixed-size batches (last one padded) on
    `mesh` / `rules` (None: `make_mesh()`, `get_rules()`)."""
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    rules = rules if rules is not None else rules_lib.get_rules()
    scorer = score.make_scorer(config, mesh, rules, kind="sequence_scores")
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = list(pairs[i : i + batch_size])
        real = len(chunk)
        chunk += [chunk[-1]] * (batch_size - real)
        b = batch_fn(chunk)
        inputs = ("tokens1", "lengths1", "tokens2", "lengths2")
        g = partition.global_batch_from_full({k: b[k] for k in inputs}, mesh)
        r1 = to_host(scorer(params, g["tokens1"], g["lengths1"]))[:real]
        r2 = to_host(scorer(params, g["tokens2"], g["lengths2"]))[:real]
        agree = losses.pairwise_agreement(r1, r2, np.asarray(b["label"])[:real])
        out.append(np.asarray(agree, dtype=np.float64))
    return np.concatenate(out) if out else np.zeros(0)


def pairwise_accuracy_on(*args, **kwargs) -> float:
    """Held-out pairwise accuracy: the mean of `pairwise_agreements_on` (0 for no pairs)."""
    agree = pairwise_agreements_on(*args, **kwargs)
    return float(agree.mean()) if agree.size else 0.0


@gin.configurable("reward")
def run_stage(
    workdir: str = gin.REQUIRED,
    output_dir: str = "rm_ai",
    preferences: str = "ai",
    label_dir: str = LABEL_DIR,
    init_from: str | None = "sft",
    model_preset: str | None = None,
    model_overrides: dict | None = None,
    vocab_path: str | None = None,
    max_context: int | None = None,
    max_response: int | None = None,
    prompt_suffix: str | None = None,
    eval_split: str = "validation",
    max_eval_pairs: int | None = None,
    max_train_pairs: int | None = None,
    train_fraction: float | None = None,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    data: tasks.TaskSources | None = None,
    policy_pairs: tasks.PolicyPairs | None = None,
    optimizer: optax.GradientTransformation | None = None,
    train_settings: TrainSettings | None = None,
    memory_plan: MemoryPlanSettings | None = None,
    plan_only: bool = False,
) -> dict[str, float]:
    """Trains an RM on 'ai' (WORKDIR/<label_dir> shards), 'human' or 'human+ai'
    preferences (`mix_human_and_ai`: all human pairs and as many AI pairs, drawn with
    TrainSettings.seed; `num_human_pairs` / `num_ai_pairs` in the metrics).

    init_from: the model whose LM trunk initialises the RM (under a fresh scalar head): a
      stage dir under WORKDIR ('sft', the AI-feedback RM of paper Table 6) or a Hugging
      Face checkpoint directory (the raw LM, the paper's human-feedback RM). Its tokenizer
      and input layout are the RM's; gin values for the layout must agree with them.
    model_preset / vocab_path: with `init_from = None`, a randomly initialised preset and
      its vocabulary (a SentencePiece .model or an HF tokenizer dir).
    eval_split: the held-out human preferences RM accuracy is measured on.
    max_train_pairs: train on this many pairs drawn at random (seed: TrainSettings.seed)
      from the training set (v1's RM accuracy vs number of pairs; `rlaif-jax table`).
    train_fraction: the same with a share of the training set in (0, 1] (rounded, at least
      one pair), so one table file fits any task's data; not with max_train_pairs.
    mesh / rules / data / optimizer / train_settings: the objects the CLI builds from gin
      (`rlaif_jax.configurables`); from Python: None = `make_mesh()`, `get_rules()`,
      `make_optimizer()`, `TrainSettings()`; data (the task's `data.tasks.TaskSources`)
      has no default. policy_pairs: read the pairs of `sample_pairs` instead of the
      task's own (`data.tasks.PolicyPairs`; gin/method/on_policy_pairs.gin).
    memory_plan / plan_only: the memory plan checked before any pair or weight is loaded
      (`sharding.stage_memory.plan_supervised`); plan_only (`rlaif-jax plan`) writes the
      model description and returns {'peak_gb', 'fits'}.
    Output: WORKDIR/<output_dir>/{model.json, tokenizer files, ckpt, COMPLETE}.
    """
    if preferences not in PREFERENCES:
        raise ValueError(f"reward.preferences={preferences!r}: use one of {PREFERENCES}.")
    t0 = time.time()
    stage_dir = os.path.join(workdir, output_dir)
    settings = train_settings or TrainSettings()
    data = tasks.need_data(data, "reward")
    if policy_pairs is not None and not plan_only:  # a plan reads no pair
        data = policy_pairs.apply(data, workdir)
    layout_fields = dict(
        max_context=max_context, max_response=max_response, prompt_suffix=prompt_suffix
    )
    start = _starting_point(
        workdir, f"{output_dir}/reward.init_from", data.task, init_from, model_preset,
        model_overrides, vocab_path, layout_fields, settings.seed,
    )  # fmt: skip
    config = start.config
    model_artifact.write_model_artifact(
        stage_dir, config, "scalar", start.vocab, start.layout, start.family, start.origin
    )
    batch_fn = functools.partial(start.layout.pair_batch, vocab=start.vocab)
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    rules = rules if rules is not None else rules_lib.get_rules()
    tx = optimizer if optimizer is not None else optim.make_optimizer()
    # The memory plan before any pair or weight is loaded: one batch as pair_batch lays it out.
    example = [{"context": "", "response1": "", "response2": "", "label": 0.5}]
    plan = stage_memory.plan_supervised(
        f"reward[{output_dir}]", config, "scalar", functools.partial(rm_loss, config),
        batch_fn(example * stage_memory.process_rows(settings.batch_size)), tx, mesh, rules,
        settings.microbatches, settings.seed, memory_plan, plan_only,
    )  # fmt: skip
    if plan_only:
        return plan
    records, counts = _training_pairs(
        data, preferences, os.path.join(workdir, label_dir), settings.seed
    )
    if max_train_pairs is not None and train_fraction is not None:
        raise ValueError(
            f"reward.max_train_pairs = {max_train_pairs} and reward.train_fraction = "
            f"{train_fraction} in {output_dir}: set one of them."
        )
    if train_fraction is not None:
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(
                f"reward.train_fraction = {train_fraction} in {output_dir}: choose a share in "
                "(0, 1] of the training pairs."
            )
        max_train_pairs = max(1, round(train_fraction * len(records)))
    if max_train_pairs is not None:
        records = subsample(records, max_train_pairs, settings.seed, "reward.max_train_pairs")
    held_out = list(data.source("human_prefs", eval_split))[: max_eval_pairs or None]
    params, metrics = train_supervised(
        stage=f"reward[{output_dir}]",
        workdir=workdir,
        stage_dir=stage_dir,
        config=config,
        head="scalar",
        batches=batching.EpochSource.over(
            records, settings.batch_size, settings.seed, batch_fn, settings.num_data_shards
        ),
        loss_fn=functools.partial(rm_loss, config),
        settings=settings,
        mesh=mesh,
        rules=rules,
        tx=tx,
        init_params=start.init_params,
    )
    agree = pairwise_agreements_on(
        config, params, held_out, batch_fn, settings.batch_size, mesh, rules
    )
    accuracy = rates.bootstrap_rate(agree)  # 95% percentile-bootstrap interval
    metrics["pairwise_accuracy"] = float(agree.mean()) if agree.size else 0.0
    metrics["pairwise_accuracy_ci_low"] = accuracy.ci_low
    metrics["pairwise_accuracy_ci_high"] = accuracy.ci_high
    metrics["num_train_pairs"] = len(records)
    metrics.update(counts)
    metrics["num_eval_pairs"] = len(held_out)
    if jax.process_index() == 0:
        logging.getLogger("rlaif_jax.reward").info(
            "reward[%s]: held-out human pairwise accuracy %.3f on %d pairs",
            output_dir,
            metrics["pairwise_accuracy"],
            len(held_out),
        )
    artifacts.write_complete(stage_dir, metrics, time.time() - t0)
    return metrics


def subsample(records: list[dict], num: int, seed: int, binding: str) -> list[dict]:
    """`num` of `records` drawn without replacement (numpy seed `seed`), in their order."""
    if num < 1 or num > len(records):
        raise ValueError(f"{binding} = {num}: choose 1..{len(records)} (the training pairs).")
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=num, replace=False))
    return [records[int(i)] for i in keep]


def mix_human_and_ai(
    human: Sequence[dict], ai: Sequence[dict], seed: int
) -> tuple[list[dict], dict[str, int]]:
    """(records, counts): every human pair (its label, 0 or 1: P(response1 preferred)),
    then as many AI pairs as there are human ones, drawn without replacement with `seed`
    (their soft label, the labeler's debiased P(response1 preferred)); all of them when
    there are fewer (a warning: the paper's mix is equal-sized). Records keep only what
    the RM reads ({id, context, response1, response2, label}) and say their `source`."""
    fields = ("id", "context", "response1", "response2", "label")
    if not human:
        raise ValueError("reward.preferences = 'human+ai': the task has no human preferences.")
    if len(ai) < len(human):
        logging.getLogger("rlaif_jax.reward").warning(
            "reward: %d AI-labeled pairs for %d human pairs; the mix is not equal-sized "
            "(label more pairs: sample_pairs.max_pairs / label.max_pairs).",
            len(ai),
            len(human),
        )
        chosen = list(ai)
    else:
        chosen = subsample(list(ai), len(human), seed, "reward.preferences='human+ai'")
    out = [{**{k: r[k] for k in fields}, "source": "human"} for r in human]
    out += [{**{k: r[k] for k in fields}, "source": "ai"} for r in chosen]
    return out, {"num_human_pairs": len(human), "num_ai_pairs": len(chosen)}


def _training_pairs(
    data: tasks.TaskSources, preferences: str, label_dir: str, seed: int
) -> tuple[list[dict], dict[str, int]]:
    """The RM's training pairs and their counts: the AI preferences in `label_dir`
    ('ai'), the task's human preferences ('human', train split) or both mixed
    ('human+ai', `mix_human_and_ai`)."""
    human = list(data.source("human_prefs", "train")) if "human" in preferences else []
    if preferences == "human":
        return human, {"num_human_pairs": len(human)}
    ai = list(data.with_ai_labels(label_dir).source("ai_prefs", "train"))
    if not ai:
        raise FileNotFoundError(f"reward: no AI preferences in {label_dir}; run `rlaif-jax label`.")
    if preferences == "ai":
        return ai, {"num_ai_pairs": len(ai)}
    return mix_human_and_ai(human, ai, seed)


def _starting_point(
    workdir,
    binding,
    task,
    init_from,
    model_preset,
    model_overrides,
    vocab_path,
    layout_fields,
    seed,
) -> model_artifact.StartingPoint:
    """The RM's starting point: the LM trunk of `init_from` (a stage dir or an HF
    checkpoint) under a fresh scalar head, or a randomly initialised `model_preset` with
    the vocabulary at `vocab_path`; `binding` names init_from in errors."""
    if init_from is not None:
        return model_artifact.start_from(
            workdir, init_from, binding, task, "scalar", model_overrides, seed,
            **layout_fields,
        )  # fmt: skip
    if model_preset is None or vocab_path is None:
        raise ValueError(
            "reward needs a starting model: reward.init_from = 'sft' (or a Hugging Face "
            "checkpoint directory), or reward.model_preset with reward.vocab_path."
        )
    config = model_artifact.preset_config(model_preset, model_overrides, "reward.model_preset")
    vocab = tokenizer_files.load_any(vocab_path)
    return model_artifact.StartingPoint(
        config=config,
        vocab=vocab,
        family=model_artifact.DEFAULT_FAMILY,
        layout=task_layout(task, add_bos=getattr(vocab, "adds_bos", False), **layout_fields),
        init_params=None,
        origin=f"preset:{model_preset}",
    )

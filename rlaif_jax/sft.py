"""`rlaif-jax sft`: supervised fine-tuning of the initial policy (paper §1.2).

Paper: PaLM 2 XS on filtered TL;DR, Adafactor, lr 1e-5, batch 128, 1 epoch, 1024/128
context/response tokens. The policy starts from a pretrained LM (`sft.init_from`: a Hugging
Face checkpoint directory, or another stage's model directory) or, for the toy world, from
random init of a named preset. Output: WORKDIR/sft/{model.json, tokenizer files, ckpt,
COMPLETE} — a self-describing model artifact (`rlaif_jax.model_artifact`) that RL,
pair sampling, RMs and evaluation read its config, tokenizer and input layout from.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence

import gin
import jax
import optax
from jax.sharding import Mesh

from rlaif_jax import artifacts, model_artifact
from rlaif_jax.data import batching, tasks, tokenizer_files
from rlaif_jax.data import vocab as vocab_lib
from rlaif_jax.data.layout import task_layout
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding import stage_memory
from rlaif_jax.sharding.memory import MemoryPlanSettings
from rlaif_jax.sharding.rules import Rules
from rlaif_jax.train import optim
from rlaif_jax.train.losses import lm_loss
from rlaif_jax.train.supervised import TrainSettings, train_supervised


@gin.configurable("sft")
def run_stage(
    workdir: str = gin.REQUIRED,
    output_dir: str = "sft",
    init_from: str | None = None,
    model_preset: str | None = None,
    model_overrides: dict | None = None,
    vocab_path: str | None = None,
    vocab_size: int | None = None,
    extra_vocab_texts: Sequence[str] = (),
    max_context: int | None = None,
    max_response: int | None = None,
    prompt_suffix: str | None = None,
    add_bos: bool | None = None,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    data: tasks.TaskSources | None = None,
    optimizer: optax.GradientTransformation | None = None,
    train_settings: TrainSettings | None = None,
    memory_plan: MemoryPlanSettings | None = None,
    plan_only: bool = False,
) -> dict[str, float]:
    """Trains the policy on the task's SFT examples (context + prompt suffix -> response +
    EOS).

    init_from: the pretrained LM to start from — a Hugging Face checkpoint directory
      (its config.json, weights and tokenizer) or a model directory under WORKDIR; its
      architecture and tokenizer are used as they are (`model_overrides` may change only
      compute settings: dtype, param_dtype, remat, attention_impl, max_len).
    model_preset: without `init_from`, a randomly initialised preset (the toy world);
      its vocabulary is `vocab_path` (a SentencePiece .model or an HF tokenizer dir) or
      one trained on the SFT texts plus `extra_vocab_texts`.
    max_context / max_response / prompt_suffix / add_bos: the policy's input layout;
      None takes the task's default (`data.layout`) and, for BOS, the tokenizer's.
    mesh / rules / data / optimizer / train_settings: the objects the CLI builds from gin
      (`rlaif_jax.configurables`; `sft/TrainSettings.batch_size`, `make_mesh.fsdp`, ...);
      from Python: None = `make_mesh()`, `get_rules()`, `make_optimizer()`,
      `TrainSettings()`; data (the task's `data.tasks.TaskSources`) has no default.
    memory_plan / plan_only: the memory plan checked before any weight is loaded
      (`sharding.stage_memory.plan_supervised`); plan_only (`rlaif-jax plan`) writes the
      model description (model.json, tokenizer) and returns {'peak_gb', 'fits'}.
    """
    t0 = time.time()
    stage_dir = os.path.join(workdir, output_dir)
    settings = train_settings or TrainSettings()
    data = tasks.need_data(data, "sft")
    records = list(data.source("sft", "train"))
    layout_fields = dict(
        max_context=max_context,
        max_response=max_response,
        prompt_suffix=prompt_suffix,
        add_bos=add_bos,
    )
    start = _starting_point(
        workdir, stage_dir, data.task, records, init_from, model_preset, model_overrides,
        vocab_path, vocab_size, extra_vocab_texts, layout_fields, settings.seed,
    )  # fmt: skip
    model_artifact.write_model_artifact(
        stage_dir, start.config, "lm", start.vocab, start.layout, start.family, start.origin
    )
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    rules = rules if rules is not None else rules_lib.get_rules()
    tx = optimizer if optimizer is not None else optim.make_optimizer()
    # The memory plan before any weight is loaded: one batch as sft_batch lays it out.
    example = [{"context": "", "response": ""}] * stage_memory.process_rows(settings.batch_size)
    plan = stage_memory.plan_supervised(
        "sft", start.config, "lm", functools.partial(lm_loss, start.config),
        start.layout.sft_batch(example, start.vocab), tx, mesh, rules,
        settings.microbatches, settings.seed, memory_plan, plan_only,
    )  # fmt: skip
    if plan_only:
        return plan
    stats = batching.TruncationStats()
    _, metrics = train_supervised(
        stage="sft",
        workdir=workdir,
        stage_dir=stage_dir,
        config=start.config,
        head="lm",
        batches=batching.EpochSource.over(
            records,
            settings.batch_size,
            settings.seed,
            functools.partial(start.layout.sft_batch, vocab=start.vocab, stats=stats),
            settings.num_data_shards,
        ),
        loss_fn=functools.partial(lm_loss, start.config),
        settings=settings,
        mesh=mesh,
        rules=rules,
        tx=tx,
        init_params=start.init_params,
    )
    metrics["num_examples"] = len(records)
    if jax.process_index() == 0:
        metrics["truncated_context"] = stats.truncated_context
        metrics["truncated_response"] = stats.truncated_response
    artifacts.write_complete(stage_dir, metrics, time.time() - t0)
    return metrics


def _starting_point(
    workdir,
    stage_dir,
    task,
    records,
    init_from,
    model_preset,
    model_overrides,
    vocab_path,
    vocab_size,
    extra_vocab_texts,
    layout_fields,
    seed,
) -> model_artifact.StartingPoint:
    """The policy's starting point: `init_from` (an HF checkpoint or a model directory) or
    a randomly initialised `model_preset`; its vocabulary must fit the model."""
    if init_from is not None:
        if model_preset is not None:
            raise ValueError(
                f"sft.init_from = {init_from!r} and sft.model_preset = {model_preset!r}: the "
                "architecture comes from the checkpoint; unset sft.model_preset."
            )
        start = model_artifact.start_from(
            workdir, init_from, "sft.init_from", task, "lm", model_overrides,
            seed, **layout_fields,
        )  # fmt: skip
    elif model_preset is not None:
        start = _preset_start(
            stage_dir, task, records, model_preset, model_overrides, vocab_path,
            vocab_size, extra_vocab_texts, layout_fields,
        )  # fmt: skip
    else:
        raise ValueError(
            "sft needs a starting model: set sft.init_from to a Hugging Face checkpoint "
            "directory (e.g. --gin.POLICY_HF_DIR in gin/experiments/paper/*.gin), or "
            "sft.model_preset for a randomly initialised preset (the toy world)."
        )
    if start.vocab.vocab_size > start.config.vocab_size:
        raise ValueError(
            f"sft: the vocabulary has {start.vocab.vocab_size} pieces but the model's "
            f"vocab_size is {start.config.vocab_size} (gin: sft.model_overrides / "
            "sft.model_preset)."
        )
    return start


def _preset_start(
    stage_dir,
    task,
    records,
    model_preset,
    model_overrides,
    vocab_path,
    vocab_size,
    extra_vocab_texts,
    layout_fields,
) -> model_artifact.StartingPoint:
    """A randomly initialised preset (the toy world): its config, its vocabulary
    (`_preset_vocabulary`) and the task's layout with `layout_fields` (BOS: the
    vocabulary's unless add_bos is set)."""
    config = model_artifact.preset_config(model_preset, model_overrides, "sft.model_preset")
    vocab = _preset_vocabulary(
        stage_dir, vocab_path, records, extra_vocab_texts, vocab_size or config.vocab_size
    )
    fields = {k: v for k, v in layout_fields.items() if k != "add_bos"}
    add_bos = layout_fields["add_bos"]
    layout = task_layout(
        task,
        add_bos=bool(add_bos if add_bos is not None else getattr(vocab, "adds_bos", False)),
        **fields,
    )
    return model_artifact.StartingPoint(
        config=config,
        vocab=vocab,
        family=model_artifact.DEFAULT_FAMILY,
        layout=layout,
        init_params=None,
        origin=f"preset:{model_preset}",
    )


def _preset_vocabulary(stage_dir, vocab_path, records, extra_texts, size):
    """A randomly initialised policy's vocabulary: a given file, or SentencePiece trained
    on the SFT texts (+ `extra_texts`) once (a rerun reuses stage_dir/spm.model)."""
    if vocab_path and not vocab_path.endswith(".model"):
        return tokenizer_files.load_any(vocab_path)
    vocab, _ = vocab_lib.stage_vocabulary(
        stage_dir,
        vocab_path,
        lambda: [t for r in records for t in (r["context"], r["response"])] + list(extra_texts),
        size,
    )
    return vocab

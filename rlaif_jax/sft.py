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
    if init_from is not None:
        if model_preset is not None:
            raise ValueError(
                f"sft.init_from = {init_from!r} and sft.model_preset = {model_preset!r}: the "
                "architecture comes from the checkpoint; unset sft.model_preset."
            )
        start = model_artifact.start_from(
            workdir, init_from, "sft.init_from", data.task, "lm", model_overrides,
            settings.seed, **layout_fields,
        )  # fmt: skip
        config, vocab, family, layout = start.config, start.vocab, start.family, start.layout
        init_params, origin = start.init_params, start.origin
    elif model_preset is not None:
        config = model_artifact.preset_config(model_preset, model_overrides, "sft.model_preset")
        vocab = _preset_vocabulary(
            stage_dir, vocab_path, records, extra_vocab_texts, vocab_size or config.vocab_size
        )
        family, init_params, origin = model_artifact.DEFAULT_FAMILY, None, f"preset:{model_preset}"
        fields = {k: v for k, v in layout_fields.items() if k != "add_bos"}
        layout = task_layout(
            data.task,
            add_bos=bool(add_bos if add_bos is not None else getattr(vocab, "adds_bos", False)),
            **fields,
        )
    else:
        raise ValueError(
            "sft needs a starting model: set sft.init_from to a Hugging Face checkpoint "
            "directory (e.g. --gin.POLICY_HF_DIR in gin/experiments/paper/*.gin), or "
            "sft.model_preset for a randomly initialised preset (the toy world)."
        )
    if vocab.vocab_size > config.vocab_size:
        raise ValueError(
            f"sft: the vocabulary has {vocab.vocab_size} pieces but the model's vocab_size is "
            f"{config.vocab_size} (gin: sft.model_overrides / sft.model_preset)."
        )
    model_artifact.write_model_artifact(stage_dir, config, "lm", vocab, layout, family, origin)
    stats = batching.TruncationStats()
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    rules = rules if rules is not None else rules_lib.get_rules()
    _, metrics = train_supervised(
        stage="sft",
        workdir=workdir,
        stage_dir=stage_dir,
        config=config,
        head="lm",
        batches=batching.EpochSource.over(
            records,
            settings.batch_size,
            settings.seed,
            functools.partial(layout.sft_batch, vocab=vocab, stats=stats),
            settings.num_data_shards,
        ),
        loss_fn=functools.partial(lm_loss, config),
        settings=settings,
        mesh=mesh,
        rules=rules,
        tx=optimizer if optimizer is not None else optim.make_optimizer(),
        init_params=init_params,
    )
    metrics["num_examples"] = len(records)
    if jax.process_index() == 0:
        metrics["truncated_context"] = stats.truncated_context
        metrics["truncated_response"] = stats.truncated_response
    artifacts.write_complete(stage_dir, metrics, time.time() - t0)
    return metrics


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

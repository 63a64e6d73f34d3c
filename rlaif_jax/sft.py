"""`rlaif-jax sft`: supervised fine-tuning of the initial policy (paper §1.2).

Paper: PaLM 2 XS on filtered TL;DR, Adafactor, lr 1e-5, batch 128, 1 epoch, 1024/128
input/target tokens. The toy world scales this down by gin (gin/runs/toy_world.gin).
Output: WORKDIR/sft/{ckpt, spm.model, COMPLETE}.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence

import gin
import jax

from rlaif_jax.data import batching, tasks
from rlaif_jax.data import vocab as vocab_lib
from rlaif_jax.models import model as model_lib
from rlaif_jax.models.config import get_config
from rlaif_jax.train import losses
from rlaif_jax.train.supervised import TrainSettings, finish, train_supervised

PROMPT_SUFFIX = "\nTL;DR:"


def lm_loss(config, params, batch, rng):
    """SFT loss: next-token cross-entropy on the target (+ EOS) tokens (with the optional
    two-token soft targets `alt_tokens` / `alt_weight` of `losses.next_token_loss`)."""
    del rng
    logits, _ = model_lib.apply(
        config, params, batch["tokens"], attention_mask=batch["attention_mask"]
    )
    loss, count = losses.next_token_loss(
        logits,
        batch["tokens"],
        batch["loss_mask"],
        batch.get("alt_tokens"),
        batch.get("alt_weight"),
    )
    return loss, {"target_tokens": count}


@gin.configurable("sft")
def run_stage(
    workdir: str = gin.REQUIRED,
    output_dir: str = "sft",
    model_preset: str = "toy_policy",
    model_overrides: dict | None = None,
    vocab_path: str | None = None,
    vocab_size: int | None = None,
    extra_vocab_texts: Sequence[str] = (),
    init_from: str | None = None,
    max_context: int = 1024,
    max_target: int = 128,
    prompt_suffix: str = PROMPT_SUFFIX,
    settings: TrainSettings | None = None,
) -> dict[str, float]:
    """Trains the policy on the task's SFT examples (context + suffix -> target + EOS).

    vocab_path: the pretrained model's SentencePiece file; None trains one on the SFT
    texts (toy world), plus `extra_vocab_texts` (e.g. the labeling prompts, so a labeler
    initialised from this policy reads them as whole words). init_from: a checkpoint dir
    to start from (None: random init).
    """
    start = time.time()
    stage_dir = os.path.join(workdir, output_dir)
    settings = settings or TrainSettings()
    data = tasks.task_sources()
    records = list(data.source("sft", "train"))
    config = get_config(model_preset, **(model_overrides or {}))
    vocab, _ = vocab_lib.stage_vocabulary(
        stage_dir,
        vocab_path,
        lambda: [t for r in records for t in (r["context"], r["target"])] + list(extra_vocab_texts),
        vocab_size or config.vocab_size,
    )
    if vocab.vocab_size > config.vocab_size:
        raise ValueError(
            f"sft: the vocabulary has {vocab.vocab_size} pieces but the model's vocab_size is "
            f"{config.vocab_size} (gin: sft.model_overrides / get_config)."
        )
    stats = batching.TruncationStats()
    batch_fn = functools.partial(
        batching.sft_batch,
        vocab=vocab,
        max_context=max_context,
        max_target=max_target,
        suffix=prompt_suffix,
        stats=stats,
    )
    _, metrics = train_supervised(
        stage="sft",
        workdir=workdir,
        stage_dir=stage_dir,
        config=config,
        head="lm",
        records=records,
        batch_fn=batch_fn,
        loss_fn=functools.partial(lm_loss, config),
        settings=settings,
        init_from=init_from,
    )
    metrics["num_examples"] = len(records)
    if jax.process_index() == 0:
        metrics["truncated_context"] = stats.truncated_context
        metrics["truncated_target"] = stats.truncated_target
    finish(stage_dir, metrics, start)
    return metrics

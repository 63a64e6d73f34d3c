"""`rlaif-jax bootstrap_labeler` (toy world only): the stand-in for an instruction-tuned LLM.

A `toy_labeler` LM (larger than the policy) is trained once, with the shared train loop,
on the toy world's generic rating corpus rendered into the real labeling prompts: the
Base preamble, the corpus's shown order (so the corpus rater's position bias and blind
spots are learned as they are), target the rater's "1"/"2" after `Preferred Summary=`;
plus d-RLAIF prompts (target a 1–10 score after `SCORE:`) so the same labeler can score
inside RL. It is then used only through the real labeling code path.
Output: WORKDIR/labeler/{ckpt, spm.model, COMPLETE}.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence

import gin
import numpy as np

from rlaif_jax.data import vocab as vocab_lib
from rlaif_jax.data.toy_world import ToyWorld
from rlaif_jax.labeling import bootstrap_data, render
from rlaif_jax.models.config import get_config
from rlaif_jax.sft import lm_loss
from rlaif_jax.train.supervised import TrainSettings, finish, train_supervised


def _preamble_texts() -> list[str]:
    """Every prompt text of the summarization variants (so the vocab covers them)."""
    out = []
    for v in (
        render.PromptVariant(preamble=p, cot=c) for p in ("base", "detailed") for c in (False, True)
    ):
        r = render.render_preference(v, "x", "y", "z")
        out += [r.prefix, r.suffix]
    out += list(render.DirectPrompt().parts())
    return out


def _bucketed_batch(
    examples: Sequence[bootstrap_data.Example],
    pad_id: int,
    bucket: int,
    max_len: int,
    text_loss: bool,
):
    """Pads a batch to the longest example rounded up to `bucket` (few compiled shapes)."""
    longest = max(len(e.ids) for e in examples)
    length = min(max_len, -(-longest // bucket) * bucket)
    return bootstrap_data.to_batch(examples, length, pad_id, text_loss)


@gin.configurable("bootstrap_labeler")
def run_stage(
    workdir: str = gin.REQUIRED,
    output_dir: str = "labeler",
    model_preset: str = "toy_labeler",
    model_overrides: dict | None = None,
    vocab_size: int | None = None,
    variants: Sequence[render.PromptVariant] | None = None,
    direct_examples: int = 1000,
    max_len: int = 512,
    bucket: int = 32,
    text_loss: bool = True,
    settings: TrainSettings | None = None,
) -> dict[str, float]:
    """Trains the toy labeler; `variants` default to [Base 0-shot] (CoT variants use the
    world's rationales); `direct_examples` d-RLAIF rows are mixed in; `text_loss` adds a
    next-token loss on the prompt text (see `bootstrap_data.to_batch`)."""
    start = time.time()
    stage_dir = os.path.join(workdir, output_dir)
    settings = settings or TrainSettings()
    world = ToyWorld()
    config = get_config(model_preset, **(model_overrides or {}))
    vocab, _ = vocab_lib.stage_vocabulary(
        # Prompt texts repeated so their words become whole pieces like the corpus words.
        stage_dir,
        None,
        lambda: world.corpus_texts(extra=_preamble_texts() * 50),
        vocab_size or config.vocab_size,
    )
    if vocab.vocab_size > config.vocab_size:
        raise ValueError(
            f"bootstrap_labeler: vocabulary of {vocab.vocab_size} pieces exceeds the model's "
            f"vocab_size {config.vocab_size} (gin: bootstrap_labeler.model_overrides)."
        )
    variants = list(variants or [render.PromptVariant(preamble="base")])
    examples = bootstrap_data.preference_examples(
        world.rating_corpus(), vocab, variants, max_len, rationale_fn=world.rating_rationale
    )
    if direct_examples:
        rows = world.rating_scores()[:direct_examples]
        examples += bootstrap_data.direct_examples(rows, vocab, render.DirectPrompt(), max_len)
    order = np.random.default_rng(settings.seed).permutation(len(examples))
    examples = [examples[i] for i in order]
    _, metrics = train_supervised(
        stage="bootstrap_labeler",
        workdir=workdir,
        stage_dir=stage_dir,
        config=config,
        head="lm",
        records=examples,
        batch_fn=functools.partial(
            _bucketed_batch,
            pad_id=vocab.pad_id,
            bucket=bucket,
            max_len=max_len,
            text_loss=text_loss,
        ),
        loss_fn=functools.partial(lm_loss, config),
        settings=settings,
    )
    metrics["num_examples"] = len(examples)
    finish(stage_dir, metrics, start)
    return metrics

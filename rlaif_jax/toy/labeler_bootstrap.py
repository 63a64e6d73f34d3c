"""`rlaif-jax bootstrap_labeler` (toy world only): the stand-in for an instruction-tuned LLM.

An LM is trained once, with the shared train loop — in the demo the SFT policy itself as
the starting point (`init_from='sft'`, as an instruction-tuned LLM shares the policy's
pretraining), or from scratch with the larger `toy_labeler` preset and its own vocabulary —
on the toy world's generic rating corpus rendered into the real labeling prompts: the
Base preamble, each pair in both orders as the rater labeled them (so its blind spots are
learned as they are, and its position bias where it has it: on near ties), target the
rater's "1"/"2" after `Preferred Summary=`;
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
import optax
from jax.sharding import Mesh

from rlaif_jax import artifacts, model_artifact
from rlaif_jax.data import batching
from rlaif_jax.data import vocab as vocab_lib
from rlaif_jax.data.layout import task_layout
from rlaif_jax.labeling import render
from rlaif_jax.models.config import get_config
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding import stage_memory
from rlaif_jax.sharding.memory import MemoryPlanSettings
from rlaif_jax.sharding.rules import Rules
from rlaif_jax.toy import bootstrap_data
from rlaif_jax.toy import presets as _presets  # noqa: F401  (registers the toy presets)
from rlaif_jax.toy.release import install_release
from rlaif_jax.toy.world import ToyWorld
from rlaif_jax.train import optim
from rlaif_jax.train.losses import lm_loss
from rlaif_jax.train.supervised import TrainSettings, train_supervised


@gin.configurable
def labeler_prompt_texts(repeats: int = 50) -> list[str]:
    """Every prompt text of the summarization variants and the d-RLAIF prompt, `repeats`
    times (vocabulary training data: so their words become whole pieces like the
    corpus words). Gin: `sft.extra_vocab_texts = @labeler_prompt_texts()`."""
    out = []
    for v in (
        render.PromptVariant(preamble=p, cot=c) for p in ("base", "detailed") for c in (False, True)
    ):
        r = render.render_preference(v, "x", "y", "z")
        out += [r.prefix, r.suffix]
    out += list(render.DirectPrompt().parts())
    return out * repeats


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
    both_orders: bool = True,
    soft_targets: bool = False,
    init_from: str | None = None,
    max_len: int = 512,
    bucket: int = 32,
    text_loss: bool = True,
    release: str | None = None,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    optimizer: optax.GradientTransformation | None = None,
    train_settings: TrainSettings | None = None,
    memory_plan: MemoryPlanSettings | None = None,
    plan_only: bool = False,
) -> dict[str, float]:
    """Trains the toy labeler; `variants` default to [Base 0-shot] (CoT variants use the
    world's rationales); `direct_examples` d-RLAIF rows are mixed in; `both_orders` shows each
    corpus pair in both orders (each labeled by the rater as shown: the answer's prior is
    balanced, so the labeler must compare the summaries, and it learns the rater's position
    bias only where the rater has it, on near ties); `soft_targets` trains on the rater's
    probability of each answer instead of its sampled choice (distillation); `text_loss`
    adds a next-token loss on the prompt text (see `bootstrap_data.to_batch`). `init_from` (a stage dir under WORKDIR,
    e.g. 'sft'): start from that stage's LM checkpoint and use its vocabulary (`model_preset`
    must name that stage's architecture), like an instruction-tuned LLM that shares the
    policy's pretraining; `model_overrides={'num_layers': n}` with n above the preset's
    grows it to a larger labeler, the new layers stacked on top as identity blocks
    (`models.model.grow_depth`; the label stage reads the grown shape from model.json).

    `release` (a name under `toy/releases/` or a directory): install a labeler that
    was bootstrapped once and exported (`toy.release`) instead of training one; every
    training argument is then unused, `model_preset` / `model_overrides` must match it.
    mesh / rules / optimizer / train_settings: the CLI's from gin
    (`rlaif_jax.configurables`, `bootstrap_labeler/TrainSettings.*`); from Python, None =
    `make_mesh()`, `get_rules()`, `make_optimizer()`, `TrainSettings()`. memory_plan /
    plan_only: the memory plan (batches at max_len) checked before training; plan_only
    (`rlaif-jax plan`) writes the labeler's description (and installs a release) only."""
    start = time.time()
    stage_dir = os.path.join(workdir, output_dir)
    config = model_artifact.preset_config(
        model_preset, model_overrides, "bootstrap_labeler.model_preset"
    )
    if release:
        metrics = install_release(release, stage_dir, model_preset, model_overrides)
        _describe(stage_dir, config)
        if plan_only:  # nothing is trained: no device memory
            return {"peak_gb": 0.0, "fits": 1.0}
        artifacts.write_complete(stage_dir, metrics, time.time() - start)
        return metrics
    settings = train_settings or TrainSettings()
    world = ToyWorld()
    # A plan reads only the starting stage's description (its plan wrote it, unfinished).
    init_dir = _init_dir(workdir, init_from, check=not plan_only)
    vocab = _vocabulary(stage_dir, init_dir, world, vocab_size or config.vocab_size, config)
    _describe(stage_dir, config)
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    rules = rules if rules is not None else rules_lib.get_rules()
    tx = optimizer if optimizer is not None else optim.make_optimizer()
    longest = [bootstrap_data.Example(ids=(0,), target_start=0)]  # a batch at max_len
    plan = stage_memory.plan_supervised(
        "bootstrap_labeler", config, "lm", functools.partial(lm_loss, config),
        bootstrap_data.to_batch(
            longest * stage_memory.process_rows(settings.batch_size), max_len, vocab.pad_id
        ),
        tx, mesh, rules, settings.microbatches, settings.seed, memory_plan, plan_only,
    )  # fmt: skip
    if plan_only:
        return plan
    examples = _examples(
        world, vocab, variants, both_orders, soft_targets, max_len, direct_examples,
        settings.seed,
    )  # fmt: skip
    _, metrics = train_supervised(
        stage="bootstrap_labeler",
        workdir=workdir,
        stage_dir=stage_dir,
        config=config,
        head="lm",
        batches=batching.EpochSource.over(
            examples,
            settings.batch_size,
            settings.seed,
            functools.partial(
                _bucketed_batch,
                pad_id=vocab.pad_id,
                bucket=bucket,
                max_len=max_len,
                text_loss=text_loss,
            ),
            settings.num_data_shards,
        ),
        loss_fn=functools.partial(lm_loss, config),
        settings=settings,
        mesh=mesh,
        rules=rules,
        tx=tx,
        init_from=os.path.join(init_dir, "ckpt") if init_dir else None,
        init_from_layers=get_config(model_preset).num_layers if init_dir else None,
    )
    metrics["num_examples"] = len(examples)
    artifacts.write_complete(stage_dir, metrics, time.time() - start)
    return metrics


def _init_dir(workdir: str, init_from: str | None, check: bool = True) -> str | None:
    """WORKDIR/<init_from> (a finished stage, unless not `check`), or None without
    `init_from`."""
    init_dir = os.path.join(workdir, init_from) if init_from else None
    if check and init_dir and not artifacts.is_complete(init_dir):
        raise ValueError(
            f"bootstrap_labeler: init_from={init_from!r} but {init_dir} has no finished stage "
            f"(no COMPLETE marker); run that stage first or unset bootstrap_labeler.init_from."
        )
    return init_dir


def _vocabulary(stage_dir: str, init_dir: str | None, world: ToyWorld, size: int, config):
    """The starting stage's vocabulary, or one trained on the world's texts and the
    labeling prompts (`size` pieces); it must fit `config.vocab_size`."""
    vocab, _ = vocab_lib.stage_vocabulary(
        stage_dir,
        os.path.join(init_dir, "spm.model") if init_dir else None,
        lambda: world.corpus_texts(extra=labeler_prompt_texts()),
        size,
    )
    if vocab.vocab_size > config.vocab_size:
        raise ValueError(
            f"bootstrap_labeler: vocabulary of {vocab.vocab_size} pieces exceeds the model's "
            f"vocab_size {config.vocab_size} (gin: bootstrap_labeler.model_overrides)."
        )
    return vocab


def _examples(
    world: ToyWorld, vocab, variants, both_orders, soft_targets, max_len, direct_examples, seed
) -> list[bootstrap_data.Example]:
    """The rating corpus as preference examples of `variants` (default Base 0-shot), plus
    `direct_examples` d-RLAIF rows, shuffled with `seed`."""
    # The toy world is a summarization task: variants left task-less (gin) get it.
    variants = [v.with_task("summarize") for v in variants or [render.PromptVariant()]]
    examples = bootstrap_data.preference_examples(
        world.rating_corpus(both_orders, soft=soft_targets),
        vocab,
        variants,
        max_len,
        rationale_fn=world.rating_rationale,
        soft=soft_targets,
    )
    if direct_examples:
        rows = world.rating_scores()[:direct_examples]
        examples += bootstrap_data.direct_examples(rows, vocab, render.DirectPrompt(), max_len)
    order = np.random.default_rng(seed).permutation(len(examples))
    return [examples[i] for i in order]


def _describe(stage_dir: str, config) -> None:
    """Makes WORKDIR/labeler a model artifact (`model_artifact`): the label stage, the AI
    judge and d-RLAIF read it like any labeler directory."""
    vocab = vocab_lib.sentencepiece_vocabulary(os.path.join(stage_dir, "spm.model"))
    model_artifact.write_model_artifact(
        stage_dir, config, "lm", vocab, task_layout("summarize"), source="toy labeler bootstrap"
    )

"""One supervised run of the shared loop: what SFT, the reward model and the toy labeler
bootstrap have in common (born-sharded params, optimizer state, a resumable batch
source, checkpoints, metrics). The stage hands in the mesh, rules, optimizer and data
as objects; nothing here reads configuration or files other than its own checkpoints."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import jax

from rlaif_jax.models import model as model_lib
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.sharding import model_params, partition
from rlaif_jax.train import loop
from rlaif_jax.train import state as train_state
from rlaif_jax.train.checkpoint import restore_params
from rlaif_jax.train.profiler import check_profile_steps

logger = logging.getLogger("rlaif_jax.train")


@dataclass(frozen=True)
class TrainSettings:
    """Batch and length of a supervised run (e.g. `sft/TrainSettings.batch_size` in a config file).

    num_steps wins over num_epochs when set; save_every 0 saves only at the end;
    num_data_shards 0: one per process. async_checkpoints, profile_steps (first, last),
    tensorboard and wandb_project: as in `train.loop.LoopSettings` (e.g.
    `sft/TrainSettings.profile_steps = (5, 8)`, `TrainSettings.wandb_project = 'rlaif'`).
    """

    batch_size: int = 32
    num_epochs: float = 1.0
    num_steps: int | None = None
    microbatches: int = 1
    save_every: int = 200
    keep: int = 2
    log_every: int = 20
    eval_every: int = 0
    num_data_shards: int = 0
    seed: int = 0
    async_checkpoints: bool = True
    profile_steps: tuple[int, int] | None = None
    tensorboard: bool = True
    wandb_project: str | None = None

    def __post_init__(self):
        # A config file may bind a list where a tuple is meant: (5, 8) == [5, 8] here.
        if isinstance(self.profile_steps, list):
            object.__setattr__(self, "profile_steps", tuple(self.profile_steps))
        check_profile_steps(self.profile_steps, "TrainSettings.profile_steps")


class BatchSource(Protocol):
    """A resumable stream of this process's local batches (`data.batching.EpochSource`).

    num_records: records in one epoch (all processes); iterator(position | None) ->
    local batches from a saved position; position(iterator) -> that JSON dict."""

    num_records: int

    def iterator(self, position: dict | None) -> Iterator[dict]: ...

    def position(self, iterator: Iterator[dict]) -> dict: ...


def num_steps_for(settings: TrainSettings, num_records: int) -> int:
    if settings.num_steps:
        return settings.num_steps
    return max(1, math.ceil(settings.num_epochs * num_records / settings.batch_size))


def init_model_params(
    config: ModelConfig,
    head: str,
    mesh,
    rules,
    seed: int,
    init_from: str | None,
    lm_source: bool,
    init_from_layers: int | None = None,
):
    """Born-sharded params; `init_from` (a ckpt dir) overwrites them: an LM checkpoint into
    a scalar model copies the trunk (RM / value from SFT). `init_from_layers` (< the
    config's num_layers): the checkpoint has that many layers and the model is grown on top
    of it with identity blocks (`model.grow_depth`)."""
    params, shardings = model_params.init_params(
        config, jax.random.PRNGKey(seed), mesh, rules, head
    )
    if init_from and init_from_layers and init_from_layers != config.num_layers:
        post_norms = config.post_attn_norm or config.post_mlp_norm
        if head != "lm" or not 0 < init_from_layers < config.num_layers or post_norms:
            raise ValueError(
                f"Growing a {head} model of {config.num_layers} layers (post-block norms "
                f"{post_norms}) from a {init_from_layers}-layer checkpoint is not "
                "supported: growth needs an LM head, fewer source layers and no post norms."
            )
        shallow_structs, _ = model_params.abstract_params(
            config.replace(num_layers=init_from_layers), mesh, rules, head
        )
        params = model_lib.grow_depth(restore_params(init_from, shallow_structs), params)
        logger.info(
            "grew %d-layer params from %s to %d layers",
            init_from_layers,
            init_from,
            config.num_layers,
        )
    elif init_from:
        if head == "scalar" and lm_source:
            lm_structs, _ = model_params.abstract_params(config, mesh, rules, "lm")
            lm = restore_params(init_from, lm_structs)
            params = model_lib.lm_to_scalar_params(lm, params)
        else:
            params = restore_params(init_from, params)
        logger.info("initialised %s params from %s", head, init_from)
    return params, shardings


def train_supervised(
    *,
    stage: str,
    workdir: str,
    stage_dir: str,
    config: ModelConfig,
    head: str,
    batches: BatchSource,
    loss_fn: loop.LossFn,
    settings: TrainSettings,
    mesh,
    rules,
    tx,
    init_from: str | None = None,
    init_from_lm: bool = True,
    init_from_layers: int | None = None,
    eval_fn: Callable[[Any], dict[str, float]] | None = None,
    init_params: Callable[[Any, Any], tuple[Any, Any]] | None = None,
) -> tuple[Any, dict[str, float]]:
    """Trains `config`/`head` on `batches` with optimizer `tx` on `mesh`/`rules` and
    returns (params, final metrics).

    init_params(mesh, rules) -> (params, shardings): where the model starts (e.g. a
    pretrained checkpoint, `model_artifact.load_params`); otherwise random init, or the
    orbax checkpoint dir `init_from`.

    Output: stage_dir/ckpt (orbax), WORKDIR/logs/<stage>/metrics.jsonl + tb/ (TensorBoard)
    + profile/ (with `settings.profile_steps`). A rerun resumes from stage_dir/ckpt
    exactly. workdir and stage_dir may be local or URIs (gs://...).
    """
    start = time.time()
    if settings.batch_size % partition.batch_size_divisor(mesh):
        raise ValueError(
            f"{stage}: batch_size {settings.batch_size} is not divisible by the "
            f"{partition.batch_size_divisor(mesh)} batch shards of the mesh "
            "(TrainSettings.batch_size)."
        )
    num_steps = num_steps_for(settings, batches.num_records)
    if init_params is not None:
        params, shardings = init_params(mesh, rules)
    else:
        params, shardings = init_model_params(
            config, head, mesh, rules, settings.seed, init_from, init_from_lm, init_from_layers
        )
    state, state_shardings = train_state.create_sharded_state(
        params, shardings, tx, mesh, settings.seed
    )
    del params
    logdir = os.path.join(workdir, "logs", os.path.basename(stage_dir))
    step_fn = loop.make_train_step(loss_fn, settings.microbatches)
    state, metrics = loop.run_training(
        stage=stage,
        state=state,
        step=loop.jit_stepper(step_fn, state_shardings, mesh, rules),
        make_batches=batches.iterator,
        data_position=batches.position,
        settings=loop.LoopSettings(
            num_steps=num_steps,
            save_every=settings.save_every,
            keep=settings.keep,
            log_every=settings.log_every,
            eval_every=settings.eval_every,
            async_checkpoints=settings.async_checkpoints,
            profile_steps=settings.profile_steps,
            tensorboard=settings.tensorboard,
            wandb_project=settings.wandb_project,
        ),
        ckpt_dir=os.path.join(stage_dir, "ckpt"),
        metrics_path=os.path.join(logdir, "metrics.jsonl"),
        tensorboard_dir=os.path.join(logdir, "tb"),
        profile_dir=os.path.join(logdir, "profile"),
        eval_fn=eval_fn,
        tokens_per_batch=lambda local, _: count_tokens(local),
    )
    metrics["num_steps"] = num_steps
    metrics["train_seconds"] = time.time() - start
    return state.params, metrics


def count_tokens(batch: dict) -> float:
    """Real tokens in a local batch (attention mask, or the lengths of pair batches)."""
    if "attention_mask" in batch:
        return float(batch["attention_mask"].sum())
    return float(sum(batch[k].sum() for k in batch if k.startswith("lengths")))

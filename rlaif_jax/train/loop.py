"""The one sharded, resumable train loop (SFT, reward model, labeler bootstrap).

A stage supplies a pure `loss_fn(params, batch, rng) -> (loss, aux)`; `make_train_step`
turns it into `(state, batch) -> (state, metrics)` (gradient accumulation over
microbatches inside the step), `compile_step` jits it once with the state's shardings
and donation, and `run_training` drives it: global batches from per-process local
batches, checkpoints every N steps and at the end (and on SIGTERM), exact resume of
params, optimizer, step, RNG and data position, a NaN/inf guard that keeps the last good
checkpoint, JSONL/TensorBoard metrics and a progress line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlaif_jax.sharding import partition
from rlaif_jax.train.checkpoint import Checkpointer, PreemptionHandler
from rlaif_jax.train.metrics import MetricsWriter, Progress

logger = logging.getLogger("rlaif_jax.train")

PyTree = Any
LossFn = Callable[[PyTree, Mapping[str, jax.Array], jax.Array], tuple[jax.Array, dict]]


class TrainState(flax.struct.PyTreeNode):
    """step [] int32, params, opt_state, rng [2] uint32 (raw key data: checkpointable)."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params, tx, seed: int = 0) -> TrainState:
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.PRNGKey(seed),
            tx=tx,
        )


def create_sharded_state(params, params_shardings, tx, mesh, seed: int = 0):
    """(TrainState, its shardings): optimizer state laid out like the params it mirrors."""
    abstract = jax.eval_shape(lambda p: TrainState.create(p, tx, seed), params)
    rep = partition.replicated(mesh)
    shape_to_sharding = {}
    for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(params_shardings)):
        shape_to_sharding.setdefault(x.shape, s)

    def opt_sharding(x):  # moments have their param's shape; factored stats are small
        return shape_to_sharding.get(x.shape, rep)

    shardings = abstract.replace(
        step=rep,
        params=params_shardings,
        opt_state=jax.tree.map(opt_sharding, abstract.opt_state),
        rng=rep,
    )
    state = jax.jit(lambda p: TrainState.create(p, tx, seed), out_shardings=shardings)(params)
    return state, shardings


def make_train_step(loss_fn: LossFn, microbatches: int = 1) -> Callable:
    """(state, batch) -> (state, metrics): grads (accumulated over `microbatches` equal
    slices of the batch with lax.scan), one optimizer update, metrics incl. grad norm."""

    def grads_of(params, batch, rng):
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
        return loss, aux, g

    def step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if microbatches == 1:
            loss, aux, grads = grads_of(state.params, batch, rng)
        else:
            split = jax.tree.map(
                lambda x: x.reshape((microbatches, x.shape[0] // microbatches) + x.shape[1:]), batch
            )

            def body(carry, mb):
                i, acc = carry
                loss, aux, g = grads_of(state.params, mb, jax.random.fold_in(rng, i))
                acc = jax.tree.map(jnp.add, acc, (loss, aux, g))
                return (i + 1, acc), None

            zero = jax.eval_shape(grads_of, state.params, jax.tree.map(lambda x: x[0], split), rng)
            zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero)
            (_, acc), _ = jax.lax.scan(body, (0, zero), split)
            loss, aux, grads = jax.tree.map(lambda x: x / microbatches, acc)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def compile_step(step_fn: Callable, state_shardings, mesh, rules) -> Callable:
    """jit once: state sharded as given (donated), batch over ('data', 'fsdp')."""

    def batch_shardings(batch):
        return {k: partition.batch_sharding(mesh, np.ndim(v)) for k, v in batch.items()}

    cache: dict = {}

    def run(state, batch):
        key = tuple(sorted((k, np.shape(v)) for k, v in batch.items()))
        if key not in cache:
            cache[key] = partition.jit_sharded(
                step_fn,
                in_shardings=(state_shardings, batch_shardings(batch)),
                out_shardings=(state_shardings, partition.replicated(mesh)),
                donate_argnums=(0,),
            )
        with partition.sharding_context(mesh, rules):
            return cache[key](state, batch)

    return run


@dataclass(frozen=True)
class LoopSettings:
    """num_steps; save_every (0: only at the end); keep checkpoints; log_every; eval_every."""

    num_steps: int
    save_every: int = 0
    keep: int = 2
    log_every: int = 10
    eval_every: int = 0


class NonFiniteLossError(FloatingPointError):
    pass


def run_training(
    *,
    stage: str,
    state: TrainState,
    state_shardings: PyTree,
    step_fn: Callable,
    make_batches: Callable[[dict | None], Iterator[dict[str, np.ndarray]]],
    data_position: Callable[[Iterator], dict],
    settings: LoopSettings,
    ckpt_dir: str,
    metrics_path: str,
    mesh,
    rules,
    tensorboard_dir: str | None = None,
    eval_fn: Callable[[TrainState], dict[str, float]] | None = None,
    tokens_per_batch: Callable[[dict], float] | None = None,
) -> tuple[TrainState, dict[str, float]]:
    """Trains to `settings.num_steps`, resuming from `ckpt_dir` if it holds a checkpoint.

    make_batches(position | None) -> iterator of this process's local numpy batches from
    a data position (None: the start); data_position(iterator) -> JSON dict to store.
    Returns (final state, last metrics incl. eval). Raises NonFiniteLossError (the last
    good checkpoint stays) on a NaN/inf loss. Exits early (after saving) on SIGTERM.
    """
    ckpt = Checkpointer(ckpt_dir, max_to_keep=settings.keep)
    writer = MetricsWriter(metrics_path, tensorboard_dir)
    position = None
    start = 0
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        start, position = int(meta["step"]), meta.get("data")
        writer.truncate_after(start)
        logger.info("%s: resumed from step %d in %s", stage, start, ckpt_dir)
    compiled = compile_step(step_fn, state_shardings, mesh, rules)
    batches = make_batches(position)
    progress = Progress(stage, settings.num_steps, start, settings.log_every)
    preempt = PreemptionHandler()
    last: dict[str, float] = {}
    step = start
    try:
        while step < settings.num_steps:
            local = next(batches)
            state, metrics = compiled(state, partition.global_batch(local, mesh))
            step += 1
            last = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not np.isfinite(last["loss"]):
                raise NonFiniteLossError(
                    f"{stage}: loss is {last['loss']} at step {step}; stopping. The last good "
                    f"checkpoint in {ckpt_dir} is kept (lower the learning rate, check the data)."
                )
            if eval_fn is not None and settings.eval_every and step % settings.eval_every == 0:
                last.update(eval_fn(state))
            writer.write(step, last)
            progress.update(step, last, tokens_per_batch(local) if tokens_per_batch else 0.0)
            at_end = step == settings.num_steps
            if (
                at_end
                or preempt.requested
                or (settings.save_every and step % settings.save_every == 0)
            ):
                ckpt.save(
                    step, state, {"step": step, "data": data_position(batches), "metrics": last}
                )
            if preempt.requested:
                logger.warning(
                    "%s: checkpoint at step %d saved after SIGTERM; exiting.", stage, step
                )
                raise SystemExit(0)
    finally:
        preempt.close()
        writer.close()
        ckpt.close()
    if eval_fn is not None and not (settings.eval_every and step % settings.eval_every == 0):
        last.update(eval_fn(state))
    return state, last

"""The one sharded, resumable train loop of every trained model: SFT, reward model,
labeler bootstrap and RL (policy + value).

A stage supplies a pure `loss_fn(params, batch, rng) -> (loss, aux)`; `make_train_step`
turns it into `(state, batch) -> (state, metrics)` (gradient accumulation over
microbatches inside the step), `compile_step` jits it once with the state's shardings
and donation. `run_training` drives any `Stepper` `(state, local_batch) -> (state,
metrics)` — `jit_stepper` for a supervised step, or a host-orchestrated one (RL: rollout,
reward, then the compiled update): checkpoints every N steps and at the end (and on
SIGTERM; asynchronous: steps go on while the previous save is written), exact resume
of params, optimizer, step, RNG, extra state and data position, a NaN/inf guard that
keeps the last good checkpoint, JSONL/TensorBoard/W&B metrics (CLU writers), a progress
bar or line, and a `jax.profiler` trace of chosen steps.

The state itself (`TrainState`, per-part optimizers, optimizer-state shardings) is
`train.state`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlaif_jax.sharding import axes as ax
from rlaif_jax.sharding import partition
from rlaif_jax.train.checkpoint import Checkpointer, PreemptionHandler
from rlaif_jax.train.metrics import MetricsWriter, Progress
from rlaif_jax.train.profiler import StepProfiler, check_profile_steps
from rlaif_jax.train.state import TrainState

logger = logging.getLogger("rlaif_jax.train")

PyTree = Any
LossFn = Callable[[PyTree, Mapping[str, jax.Array], jax.Array], tuple[jax.Array, dict]]


def split_microbatches(batch: Mapping[str, jax.Array], microbatches: int) -> dict:
    """[B, ...] -> [M, B/M, ...] with strided rows (microbatch m = rows m, m+M, ...).

    Strided, not contiguous: the batch is sharded over ('data', 'fsdp') in contiguous
    blocks, so every device holds B/(M*devices) rows of *each* microbatch and all devices
    work on every microbatch without moving data.
    """

    def one(x):
        if x.shape[0] % microbatches:
            raise ValueError(
                f"batch of {x.shape[0]} rows is not divisible into {microbatches} microbatches "
                "(TrainSettings.microbatches, or RLSettings.microbatches for RL)."
            )
        y = x.reshape((x.shape[0] // microbatches, microbatches) + x.shape[1:]).swapaxes(0, 1)
        names = (None, ax.ACT_BATCH) + (None,) * (x.ndim - 1)
        return nn.with_logical_constraint(y, names)

    return {k: one(v) for k, v in batch.items()}


def make_train_step(
    loss_fn: LossFn, microbatches: int = 1, part_grad_norms: Sequence[str] = ()
) -> Callable:
    """(state, batch) -> (state, metrics): one optimizer update.

    The step's RNG is `fold_in(state.rng, state.step)` (and `fold_in(., i)` per
    microbatch), so it lives in the checkpointed state and a resumed run draws the same
    numbers. With `microbatches` M > 1, grads, loss and aux are averaged over M strided
    slices of the batch by `lax.scan` (activation memory of B/M rows); this equals the
    full-batch gradient when `loss_fn` is a mean whose weight is equal across slices (or
    a sum over the slice divided by a batch-wide normaliser / M, as RL's token mean).
    Metrics: loss, grad_norm (before clipping, all parts), grad_norm_<part> for each of
    `part_grad_norms` (top-level keys of the params dict), and the loss_fn's aux.
    """

    def grads_of(params, batch, rng):
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
        return loss, aux, g

    def step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if microbatches == 1:
            loss, aux, grads = grads_of(state.params, batch, rng)
        else:
            split = split_microbatches(batch, microbatches)

            def body(carry, mb):
                i, acc = carry
                out = grads_of(state.params, mb, jax.random.fold_in(rng, i))
                acc = jax.tree.map(lambda a, b: a + b.astype(a.dtype), acc, out)
                return (i + 1, acc), None

            first = jax.tree.map(lambda x: x[0], split)
            shapes = jax.eval_shape(grads_of, state.params, first, rng)
            zero = jax.tree.map(
                lambda s: jnp.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32)), shapes
            )
            (_, acc), _ = jax.lax.scan(body, (0, zero), split)
            loss, aux, grads = jax.tree.map(lambda x: x / microbatches, acc)
            grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
        for part in part_grad_norms:
            metrics[f"grad_norm_{part}"] = optax.global_norm(grads[part])
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


# (state, this process's local batch) -> (state, metrics: scalars, device or host).
Stepper = Callable[[PyTree, Any], tuple[PyTree, Mapping[str, Any]]]


def jit_stepper(step_fn: Callable, state_shardings, mesh, rules) -> Stepper:
    """The Stepper of a pure step: local numpy batches become global arrays, then the
    step runs jitted once (`compile_step`)."""
    compiled = compile_step(step_fn, state_shardings, mesh, rules)
    return lambda state, local: compiled(state, partition.global_batch(local, mesh))


@dataclass(frozen=True)
class LoopSettings:
    """num_steps; save_every (0: only at the end); keep checkpoints; log_every; eval_every.

    async_checkpoints: steps go on while a checkpoint is written (False: each save
    blocks). profile_steps (first, last): a `jax.profiler` trace of steps first..last
    (1-based, inclusive) into the run's profile directory. tensorboard: write TensorBoard
    events (the JSONL file is always written). wandb_project: also log to this W&B
    project (needs the wandb package)."""

    num_steps: int
    save_every: int = 0
    keep: int = 2
    log_every: int = 10
    eval_every: int = 0
    async_checkpoints: bool = True
    profile_steps: tuple[int, int] | None = None
    tensorboard: bool = True
    wandb_project: str | None = None

    def __post_init__(self):
        check_profile_steps(self.profile_steps)


class NonFiniteLossError(FloatingPointError):
    """A NaN/inf loss or gradient norm: the run stops and its last good checkpoint stays."""


def _check_finite(stage: str, step: int, metrics: Mapping[str, float], ckpt_dir: str) -> None:
    bad = [k for k in ("loss", "grad_norm") if k in metrics and not np.isfinite(metrics[k])]
    if bad:
        values = ", ".join(f"{k}={metrics[k]}" for k in bad)
        raise NonFiniteLossError(
            f"{stage}: {values} at step {step}; stopping without saving this state. The last "
            f"good checkpoint in {ckpt_dir} is kept (lower the learning rate, check the data)."
        )


def run_training(
    *,
    stage: str,
    state: TrainState,
    step: Stepper,
    make_batches: Callable[[dict | None], Iterator],
    data_position: Callable[[Iterator], dict],
    settings: LoopSettings,
    ckpt_dir: str,
    metrics_path: str,
    tensorboard_dir: str | None = None,
    eval_fn: Callable[[TrainState], dict[str, float]] | None = None,
    tokens_per_batch: Callable[[Any, Mapping[str, float]], float] | None = None,
    export_params: Callable[[TrainState], PyTree] | None = None,
    stop_after: int | None = None,
    profile_dir: str | None = None,
) -> tuple[TrainState, dict[str, float]]:
    """Trains to `settings.num_steps`, resuming from `ckpt_dir` if it holds a checkpoint.

    step(state, local_batch) -> (state, metrics) is a `Stepper`: `jit_stepper` over a
    pure step (`make_train_step(loss_fn)`), or a host-orchestrated one (RL) whose state
    is a TrainState (subclass) and whose metrics are scalars incl. 'loss'.
    make_batches(position | None) -> iterator of this process's local batches from a data
    position (None: the start); data_position(iterator) -> the JSON dict stored with each
    checkpoint (so a resumed run sees the same batches). tokens_per_batch(local batch,
    fetched metrics) -> tokens for the progress rate. export_params(state) -> the params
    other stages restore from the checkpoint (default state.params; RL: the policy).
    stop_after: return after that many steps of this call, saved (tests simulate a kill).
    profile_dir: where `settings.profile_steps` writes its trace (default: `profile`
    beside the metrics file). Paths may be local or URIs (gs://...).

    Metrics of step s are fetched after step s+1 is dispatched (the device never waits
    for the host), except at checkpoints, evals and the end, which see their own step's
    metrics first: a NaN/inf loss or grad norm raises NonFiniteLossError naming its step
    before any later save, so the last checkpoint is always good. Checkpoints are written
    in the background while later steps run; the next save, the end of the run and
    SIGTERM wait for the one in flight. SIGTERM: the loop saves the current step, waits
    for it and exits 0 (SystemExit). Returns (final state, last metrics incl. eval).
    """
    if profile_dir is None:
        profile_dir = os.path.join(os.path.dirname(metrics_path), "profile")
    run = _Run(stage, settings, ckpt_dir, metrics_path, tensorboard_dir, eval_fn, profile_dir)
    try:
        state, position = run.resume(state)
        batches = make_batches(position)
        current = run.start
        while current < settings.num_steps:
            local = next(batches)
            run.profiler.before(current + 1)
            state, metrics = step(state, local)
            current += 1
            run.profiler.after(current, state)
            run.flush(state)  # the previous step's metrics, while this step runs
            run.pending = (current, metrics, local, tokens_per_batch)
            evaluating = eval_fn is not None and settings.eval_every > 0
            evaluating = evaluating and current % settings.eval_every == 0
            stopping = run.preempt.requested or (
                stop_after is not None and current - run.start >= stop_after
            )
            saving = (
                current == settings.num_steps
                or stopping
                or (settings.save_every > 0 and current % settings.save_every == 0)
            )
            if evaluating or saving:
                run.flush(state, evaluate=evaluating)
            if saving:
                exported = export_params(state) if export_params else None
                run.save(current, state, data_position(batches), exported)
            if run.preempt.requested:
                run.ckpt.wait()
                logger.warning(
                    "%s: checkpoint at step %d saved after SIGTERM; exiting.", stage, current
                )
                raise SystemExit(0)
            if stopping:
                return state, run.last
        run.flush(state)
    finally:
        run.close()
    if eval_fn is not None and run.evaluated_at != current:
        run.last.update(eval_fn(state))
    return state, run.last


class _Run:
    """The bookkeeping of one `run_training` call: checkpoints, metrics files, progress,
    SIGTERM, and the one step whose metrics are not fetched yet."""

    def __init__(
        self, stage, settings, ckpt_dir, metrics_path, tensorboard_dir, eval_fn, profile_dir
    ):
        self.stage, self.eval_fn, self.ckpt_dir = stage, eval_fn, ckpt_dir
        self.ckpt = Checkpointer(
            ckpt_dir, max_to_keep=settings.keep, async_save=settings.async_checkpoints
        )
        self.writer = MetricsWriter(
            metrics_path,
            tensorboard_dir if settings.tensorboard else None,
            settings.wandb_project,
            run_name=stage,
        )
        self.profiler = StepProfiler(settings.profile_steps, profile_dir, stage)
        self.settings = settings
        self.preempt = PreemptionHandler()
        self.start = 0
        self.last: dict[str, float] = {}
        self.pending = None  # (step, metrics not yet fetched, local batch, tokens fn)
        self.evaluated_at: int | None = None
        self.progress: Progress | None = None

    def resume(self, state):
        """(state, data position): the latest checkpoint's, or the given state and None."""
        position = None
        if self.ckpt.latest_step() is not None:
            state, meta = self.ckpt.restore(state)
            self.start, position = int(meta["step"]), meta.get("data")
            self.last = dict(meta.get("metrics") or {})
            logger.info("%s: resumed from step %d in %s", self.stage, self.start, self.ckpt_dir)
        self.writer.truncate_after(self.start)
        self.progress = Progress(
            self.stage, self.settings.num_steps, self.start, self.settings.log_every
        )
        return state, position

    def flush(self, state, evaluate: bool = False) -> None:
        """Fetches, checks and writes the pending step's metrics (+ eval metrics)."""
        if self.pending is None:
            return
        s, metrics, local, tokens_fn = self.pending
        self.pending = None
        fetched = jax.device_get(dict(metrics))  # a pytree: its keys come back sorted
        self.last = {k: float(fetched[k]) for k in metrics}  # the step's own order
        _check_finite(self.stage, s, self.last, self.ckpt_dir)
        if evaluate:
            self.last.update(self.eval_fn(state))
            self.evaluated_at = s
        self.writer.write(s, self.last)
        self.progress.update(s, self.last, tokens_fn(local, self.last) if tokens_fn else 0.0)

    def save(self, step: int, state, position: dict, exported) -> None:
        """Starts the checkpoint of `step` (written in the background) and makes the
        metrics rows up to it durable."""
        meta = {"step": step, "data": position, "metrics": self.last}
        self.ckpt.save(step, state, meta, params=exported)
        self.writer.flush()

    def close(self) -> None:
        self.preempt.close()
        self.profiler.close()
        if self.progress is not None:
            self.progress.close()
        try:
            self.ckpt.close()  # waits for the checkpoint in flight
        finally:
            self.writer.close()

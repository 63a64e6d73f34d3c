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

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rlaif_jax.sharding import axes as ax
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


def opt_state_shardings(abstract_opt_state, params_structs, params_shardings, mesh):
    """Shardings for an optimizer state: a leaf under a param's path takes that param's
    sharding (Adam moments, Adafactor's unfactored `v`); a factored statistic (Adafactor
    `v_row`/`v_col`: the param's shape less one dim) takes its spec less that dim; counts
    and placeholders are replicated. Matching by path, not by shape alone, keeps e.g. the
    moments of wq [D, H*Dh] and wo [H*Dh, D] on their own layouts when H*Dh == D."""
    rep = partition.replicated(mesh)
    by_path = {}
    for (path, x), s in zip(
        jax.tree_util.tree_leaves_with_path(params_structs), jax.tree.leaves(params_shardings)
    ):
        by_path[tuple(path)] = (tuple(x.shape), s)

    def one(path, leaf):
        path = tuple(path)
        for i in range(len(path)):
            hit = by_path.get(path[i:])
            if hit is None:
                continue
            shape, sharding = hit
            if tuple(leaf.shape) == shape:
                return sharding
            spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
            # v_row drops the later factored dim, v_col the earlier: try in that order.
            dims = range(len(shape) - 1, -1, -1)
            if "v_col" in jax.tree_util.keystr(path):
                dims = range(len(shape))
            for d in dims:
                if shape[:d] + shape[d + 1 :] == tuple(leaf.shape):
                    return NamedSharding(mesh, P(*(spec[:d] + spec[d + 1 :])))
            return rep
        return rep

    return jax.tree_util.tree_map_with_path(one, abstract_opt_state)


def create_sharded_state(params, params_shardings, tx, mesh, seed: int = 0):
    """(TrainState, its shardings): optimizer state laid out like the params it mirrors
    (see `opt_state_shardings`), step and RNG replicated; built by one jit, so nothing
    is ever whole on one device."""
    abstract = jax.eval_shape(lambda p: TrainState.create(p, tx, seed), params)
    rep = partition.replicated(mesh)
    structs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    shardings = abstract.replace(
        step=rep,
        params=params_shardings,
        opt_state=opt_state_shardings(abstract.opt_state, structs, params_shardings, mesh),
        rng=rep,
    )
    state = jax.jit(lambda p: TrainState.create(p, tx, seed), out_shardings=shardings)(params)
    return state, shardings


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
                "(gin: TrainSettings.microbatches)."
            )
        y = x.reshape((x.shape[0] // microbatches, microbatches) + x.shape[1:]).swapaxes(0, 1)
        names = (None, ax.ACT_BATCH) + (None,) * (x.ndim - 1)
        return nn.with_logical_constraint(y, names)

    return {k: one(v) for k, v in batch.items()}


def make_train_step(loss_fn: LossFn, microbatches: int = 1) -> Callable:
    """(state, batch) -> (state, metrics): one optimizer update.

    The step's RNG is `fold_in(state.rng, state.step)` (and `fold_in(., i)` per
    microbatch), so it lives in the checkpointed state and a resumed run draws the same
    numbers. With `microbatches` M > 1, grads, loss and aux are averaged over M strided
    slices of the batch by `lax.scan` (activation memory of B/M rows); this equals the
    full-batch gradient when `loss_fn` is a mean whose weight is equal across slices.
    Metrics: loss, grad_norm (before clipping), and the loss_fn's aux.
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

    step_fn(state, batch) -> (state, metrics) is any pure step over global arrays: the
    supervised one from `make_train_step(loss_fn)`, or a custom one (e.g. RL: rollout +
    update in one jitted function) as long as `state` is a pytree whose shardings are
    `state_shardings` and metrics are scalars incl. 'loss'. It is jitted once here with
    the state donated. make_batches(position | None) -> iterator of this process's local
    numpy batches from a data position (None: the start); data_position(iterator) -> the
    JSON dict stored with each checkpoint (so a resumed run sees the same batches).

    Metrics of step s are fetched after step s+1 is dispatched (the device never waits
    for the host), except at checkpoints, evals and the end, which see their own step's
    metrics first: a NaN/inf loss or grad norm raises NonFiniteLossError naming its step
    before any later save, so the last checkpoint is always good. SIGTERM: the loop saves
    the current step and exits 0 (SystemExit). Returns (final state, last metrics incl.
    eval).
    """
    ckpt = Checkpointer(ckpt_dir, max_to_keep=settings.keep)
    writer = MetricsWriter(metrics_path, tensorboard_dir)
    position = None
    start = 0
    last: dict[str, float] = {}
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        start, position = int(meta["step"]), meta.get("data")
        last = dict(meta.get("metrics") or {})
        writer.truncate_after(start)
        logger.info("%s: resumed from step %d in %s", stage, start, ckpt_dir)
    compiled = compile_step(step_fn, state_shardings, mesh, rules)
    batches = make_batches(position)
    progress = Progress(stage, settings.num_steps, start, settings.log_every)
    preempt = PreemptionHandler()
    pending = None  # (step, device metrics, tokens) not yet fetched
    evaluated_at = None

    def flush(evaluate: bool = False):
        """Fetches, checks and writes the pending step's metrics (+ eval metrics)."""
        nonlocal pending, last, evaluated_at
        if pending is None:
            return
        s, metrics, tokens = pending
        pending = None
        last = {k: float(v) for k, v in jax.device_get(metrics).items()}
        _check_finite(stage, s, last, ckpt_dir)
        if evaluate:
            last.update(eval_fn(state))
            evaluated_at = s
        writer.write(s, last)
        progress.update(s, last, tokens)

    step = start
    try:
        while step < settings.num_steps:
            local = next(batches)
            tokens = tokens_per_batch(local) if tokens_per_batch else 0.0
            state, metrics = compiled(state, partition.global_batch(local, mesh))
            step += 1
            flush()  # the previous step's metrics, while this step runs
            pending = (step, metrics, tokens)
            evaluating = eval_fn is not None and settings.eval_every > 0
            evaluating = evaluating and step % settings.eval_every == 0
            saving = (
                step == settings.num_steps
                or preempt.requested
                or (settings.save_every > 0 and step % settings.save_every == 0)
            )
            if evaluating or saving:
                flush(evaluate=evaluating)
            if saving:
                meta = {"step": step, "data": data_position(batches), "metrics": last}
                ckpt.save(step, state, meta)
            if preempt.requested:
                logger.warning(
                    "%s: checkpoint at step %d saved after SIGTERM; exiting.", stage, step
                )
                raise SystemExit(0)
        flush()
    finally:
        preempt.close()
        writer.close()
        ckpt.close()
    if eval_fn is not None and evaluated_at != step:
        last.update(eval_fn(state))
    return state, last

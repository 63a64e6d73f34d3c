"""Per-device memory of one phase or role, from a stage's own jitted functions on
abstract inputs (`jax.ShapeDtypeStruct`s with shardings; params from `eval_shape`):
nothing is allocated. The rows `sharding.stage_memory` (every stage) and `rl.plan` (the
RL stage) build their plans from:

- `trainee_rows`: a model trained by the shared loop: params and the optimizer state of
  `train.state`, and the train step of `train.loop.make_train_step` as a phase;
- `decode_phase`: a sampler (`decoding.sample.make_sampler`): its KV cache and the decode
  loop's temporaries;
- `scoring_phase` / `scoring_rows`: a frozen role's scoring call (a reward model's
  sequence scores, a labeler's candidate log-probs);
- `frozen_role`: a role's params without optimizer state;
- `phase`: any program, compiled (`memory_analysis()`) or the analytic estimate
  (`analytic_forward` / `analytic_backward` / `gathered`: hardware not here);
  `concurrent`: programs dispatched together on one device set, as one phase.

Shapes: B rows of a call (global over the mesh), L tokens per row, T new tokens, S
samples per prompt.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlaif_jax.models.config import ModelConfig, num_params
from rlaif_jax.sharding import axes as ax
from rlaif_jax.sharding import memory, model_params, partition, placement

PyTree = Any
logger = logging.getLogger("rlaif_jax.memory")


@dataclasses.dataclass(frozen=True)
class Side:
    """A mesh and rules table a plan lays roles out on (concrete: compiled phases)."""

    mesh: Any
    rules: Any
    offset: int = 0  # first device id of an abstract mesh

    @property
    def devices(self) -> tuple[int, ...]:
        return placement.mesh_device_ids(self.mesh, self.offset)

    @property
    def concrete(self) -> bool:
        return isinstance(self.mesh, jax.sharding.Mesh)


# Plans of many layouts (docs/scaling.md) trace the same model once per mesh and rules.
abstract_params = functools.lru_cache(maxsize=32)(model_params.abstract_params)


def rows(side: Side, shape: tuple[int, ...], dtype) -> jax.ShapeDtypeStruct:
    """A batch array [B, ...] with B over the mesh's batch axes."""
    return jax.ShapeDtypeStruct(
        shape, dtype, sharding=partition.batch_sharding(side.mesh, len(shape))
    )


def process_rows(batch_size: int) -> int:
    """Rows of one process's part of a global batch (a stage's local batch)."""
    return max(batch_size // jax.process_count(), 1)


def batch_structs(local: Mapping[str, Any], side: Side) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch a step sees for this process's `local` numpy batch (rows over
    every process, as `partition.global_batch` builds it), allocating nothing."""
    procs = jax.process_count()
    return {
        k: rows(side, (np.shape(v)[0] * procs,) + np.shape(v)[1:], np.asarray(v).dtype)
        for k, v in local.items()
    }


def kv_cache_bytes(config: ModelConfig, side: Side, n_rows: int, slots: int) -> int:
    """Per-device bytes of a KV cache: per layer (k, v) [rows, slots, K, Dh] with rows
    over the batch axes and K over whatever ACT_KV_HEADS maps to."""
    spec = partition.logical_to_spec(
        (ax.ACT_BATCH, ax.CACHE_LENGTH, ax.ACT_KV_HEADS, ax.ACT_HEAD_DIM), side.rules
    )
    sharded = jax.ShapeDtypeStruct(
        (n_rows, slots, config.num_kv_heads, config.head_dim),
        config.dtype,
        sharding=jax.sharding.NamedSharding(side.mesh, spec),
    )
    return 2 * config.num_layers * memory.leaf_bytes_per_device(sharded)


def phase(
    name, roles, side, fn, args, resident, kv=0, donate=(), analytic=None, compile=True,
    out_shardings=None,
):  # fmt: skip
    """One PhaseMemory: `fn` compiled on `args` (with `out_shardings`, None = XLA's
    choice) when the side is concrete and `compile` (temporaries from memory_analysis;
    inputs / outputs beyond the `resident` bytes are its batch), else
    `analytic() -> (temp, io)`."""
    if compile and side.concrete:
        try:
            with partition.sharding_context(side.mesh, side.rules):
                m = memory.compiled_memory(
                    fn, *args, donate_argnums=donate, out_shardings=out_shardings
                )
        except Exception as e:  # noqa: BLE001  a plan must not stop a run the estimate allows
            logger.warning("memory plan: %s did not compile on abstract inputs (%s); "
                           "using the analytic estimate", name, e)  # fmt: skip
        else:
            io = max(0, m.argument + m.output - m.alias - resident)
            return memory.PhaseMemory(name, roles, side.devices, m.temp, io, kv, "compiled")
    temp, io = analytic()
    return memory.PhaseMemory(name, roles, side.devices, temp, io, kv, "analytic")


def concurrent(name: str, phases: list[memory.PhaseMemory]) -> memory.PhaseMemory:
    """Phases dispatched together on the same devices as one: their roles, and their
    transients summed (both programs' temporaries may be live at once)."""
    sources = {p.source for p in phases}
    return memory.PhaseMemory(
        name,
        tuple(r for p in phases for r in p.roles),
        phases[0].devices,
        sum(p.temp for p in phases),
        sum(p.io for p in phases),
        sum(p.kv_cache for p in phases),
        sources.pop() if len(sources) == 1 else " + ".join(sorted(sources)),
    )


def analytic_forward(config: ModelConfig, n_rows: int, length: int, logits_rows: int) -> int:
    """Temporaries of a no-grad forward on one device: a layer's activations at a time
    (residual, q/k/v, attention scores, MLP) and f32 logits where they are read."""
    act = np.dtype(config.dtype).itemsize
    d, f, h, dh = config.d_model, config.mlp_dim, config.num_heads, config.head_dim
    per_layer = n_rows * length * (4 * d + 2 * h * dh + 3 * f) * act
    scores = n_rows * h * length * length * 4
    return per_layer + scores + 3 * logits_rows * config.vocab_size * 4


def analytic_backward(config: ModelConfig, n_rows: int, length: int, t: int, grads: int) -> int:
    """Temporaries of a train step on one device: saved activations of every layer
    (remat 'full': only each layer's input), one layer's working set, the logits and
    their gradient in f32 at `t` positions per row, and the gradients (`grads`, the
    trainable params' bytes)."""
    act = np.dtype(config.dtype).itemsize
    d, f, h, dh = config.d_model, config.mlp_dim, config.num_heads, config.head_dim
    layer = n_rows * length * (6 * d + 4 * h * dh + 4 * f) * act
    layer += n_rows * h * length * length * 4
    saved = n_rows * length * d * act if config.remat == "full" else layer
    logits = 3 * n_rows * t * config.vocab_size * 4
    return config.num_layers * saved + layer + logits + grads


def gathered(config: ModelConfig, side: Side, layer_dtype: Any, train: bool = False) -> int:
    """Weights a sharded step gathers whole on each device (FSDP / TP all-gathers): the
    embedding table in the compute dtype, two layers' weights in `layer_dtype` (one in
    use, one prefetched) and, in a train step, the embedding's full f32 gradient before
    its reduce-scatter. 0 when the params are replicated (nothing to gather). Fitted to
    memory_analysis() of the CPU-compiled steps (`rl.scaling.calibration`)."""
    emb, _ = abstract_params(config, side.mesh, side.rules, "scalar")
    full = num_params(config, "scalar") * np.dtype(config.param_dtype).itemsize
    if memory.tree_bytes_per_device(emb) >= full:
        return 0
    v, d = config.vocab_size, config.d_model
    layer = (num_params(config, "scalar") - v * d - d) // config.num_layers
    out = v * d * np.dtype(config.dtype).itemsize + 2 * layer * np.dtype(layer_dtype).itemsize
    return out + (v * d * 4 if train else 0)


def local_rows(side: Side, n_rows: int) -> int:
    """Rows of a global batch one device holds."""
    return max(n_rows // partition.batch_size_divisor(side.mesh), 1)


def key_struct(side: Side) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=partition.replicated(side.mesh))


def frozen_role(
    role: str, config: ModelConfig, side: Side, head: str = "lm", exclusive: bool = False
) -> tuple[memory.RoleMemory, PyTree]:
    """(RoleMemory of a frozen model's params in its param_dtype, their structs)."""
    structs, _ = abstract_params(config, side.mesh, side.rules, head)
    size = memory.tree_bytes_per_device(structs)
    row = memory.RoleMemory(role, side.devices, size, 0, str(config.param_dtype), exclusive)
    return row, structs


def trainee_rows(
    role: str,
    config: ModelConfig,
    head: str,
    loss_fn: Callable[..., Any],
    batch: Mapping[str, jax.ShapeDtypeStruct],
    tx: Any,
    side: Side,
    microbatches: int = 1,
    seed: int = 0,
    compile: bool = True,
    phase_name: str = "train step",
) -> tuple[memory.RoleMemory, memory.PhaseMemory]:
    """(params + optimizer state, the train step) of a model trained by the shared loop
    (`train.supervised`): the state `train.state.create_sharded_state` would build and
    the step `train.loop.make_train_step(loss_fn, microbatches)` compiled on it (state
    donated) and on `batch` (`batch_structs`)."""
    from rlaif_jax.train import loop
    from rlaif_jax.train import state as train_state

    structs, shardings = abstract_params(config, side.mesh, side.rules, head)
    abstract, state_sh, _ = train_state.sharded_state_layout(
        structs, shardings, tx, side.mesh, seed
    )
    state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh
    )
    params = memory.tree_bytes_per_device(state.params)
    opt = memory.tree_bytes_per_device(state.opt_state)
    row = memory.RoleMemory(role, side.devices, params, opt)
    # Rows the model reads: every [B, L] token array (a pair batch has two: 2B rows).
    tokens = [a for k, a in batch.items() if k.startswith("tokens") and len(a.shape) == 2]
    b, length = sum(a.shape[0] for a in tokens), tokens[0].shape[1]
    batch_bytes = sum(memory.leaf_bytes_per_device(a) for a in batch.values())
    micro = max(local_rows(side, b) // microbatches, 1)
    logits_at = length if head == "lm" else 1
    step = phase(
        phase_name,
        (role,),
        side,
        loop.make_train_step(loss_fn, microbatches),
        (state, dict(batch)),
        memory.tree_bytes_per_device(state),
        donate=(0,),
        out_shardings=(state_sh, partition.replicated(side.mesh)),
        analytic=lambda: (
            analytic_backward(config, micro, length, logits_at, params)
            + gathered(config, side, config.param_dtype, train=True),
            batch_bytes,
        ),
        compile=compile,
    )
    return row, step


def decode_phase(
    name: str,
    role: str,
    config: ModelConfig,
    params: PyTree,
    side: Side,
    batch_size: int,
    prompt_len: int,
    max_new: int,
    num_samples: int = 1,
    compile: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    resident: int | None = None,
) -> memory.PhaseMemory:
    """The sampler of `decoding.sample.make_sampler` on `params` (structs) for
    `batch_size` prompts [B, prompt_len] with `num_samples` samples of `max_new` tokens
    each: its KV cache [B·S, prompt_len + max_new] and the decode loop's temporaries.
    resident: the bytes of `params` that are resident roles (None: all of them)."""
    from rlaif_jax.decoding import sample

    n = batch_size * num_samples
    kv = kv_cache_bytes(config, side, n, prompt_len + max_new)
    if resident is None:
        resident = memory.tree_bytes_per_device(params)
    policy_bytes = memory.tree_bytes_per_device(params)

    def sampler():
        return sample.make_sampler(
            config, side.mesh, side.rules, max_new_tokens=max_new, temperature=temperature,
            top_k=top_k, top_p=top_p, eos_id=(1,), pad_id=0, num_samples=num_samples,
        )  # fmt: skip

    return phase(
        name,
        (role,),
        side,
        sampler() if compile and side.concrete else None,
        (
            params,
            rows(side, (batch_size, prompt_len), jnp.int32),
            rows(side, (batch_size,), jnp.int32),
            key_struct(side),
        ),
        resident,
        kv=kv,
        analytic=lambda: (
            kv
            + policy_bytes // 2
            + analytic_forward(
                config, local_rows(side, batch_size), prompt_len, local_rows(side, n)
            )
            + gathered(config, side, config.dtype),
            0,
        ),
        compile=compile,
    )


def scoring_phase(
    spec: memory.ScoringRoleSpec, structs: PyTree, side: Side, compile: bool = True
) -> memory.PhaseMemory:
    """A frozen role's scoring call on `side`: a reward model's `score.sequence_scores`
    or a labeler's `score.candidate_distribution` on [spec.batch_size, spec.length]
    rows, over its params `structs`."""
    from rlaif_jax.decoding import score

    config = spec.config
    b, length = spec.batch_size, spec.length
    tokens = rows(side, (b, length), jnp.int32)
    lengths = rows(side, (b,), jnp.int32)
    if spec.head == "scalar":

        def fn(p, tok, lens):
            return score.sequence_scores(config, p, tok, lens)

        args = (structs, tokens, lengths)
    else:
        rep = jax.ShapeDtypeStruct((2,), jnp.int32, sharding=partition.replicated(side.mesh))

        def fn(p, tok, lens, cands):
            return score.candidate_distribution(config, p, tok, lens, cands)[1]

        args = (structs, tokens, lengths, rep)
    local = local_rows(side, b)
    return phase(
        spec.role,
        (spec.role,),
        side,
        fn,
        args,
        memory.tree_bytes_per_device(structs),
        analytic=lambda: (
            analytic_forward(config, local, length, local)
            + gathered(config, side, config.param_dtype),
            0,
        ),
        compile=compile,
    )


def scoring_rows(
    spec: memory.ScoringRoleSpec, side: Side, compile: bool = True
) -> tuple[memory.RoleMemory, memory.PhaseMemory]:
    """(RoleMemory, PhaseMemory) of a frozen scoring role (RL's reward model or d-RLAIF
    labeler, the label stage's labeler) on `side`."""
    role, structs = frozen_role(spec.role, spec.config, side, spec.head)
    return role, scoring_phase(spec, structs, side, compile)

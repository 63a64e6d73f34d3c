"""The RL stage's arrays as `jax.ShapeDtypeStruct`s with shardings, for its memory plan
(`rl.plan`): the trainable params in each layout of `rl.policy_value` (full copies, LoRA
adapters, a value head on the policy's trunk), the `learner.RLState` of each device set
(`learner.create_state`), the merged kernels the LoRA sampler reads, and the rollout
batches the score and update programs take. Nothing is allocated.

Shapes: N rollouts, Lp prompt tokens, T response tokens.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rlaif_jax.models import lora as lora_lib
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.rl import a2c
from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.sharding import memory, partition, phase_memory
from rlaif_jax.sharding.phase_memory import Side
from rlaif_jax.train import state as train_state

PyTree = Any


def trainable_structs(
    config: ModelConfig,
    value_config: ModelConfig,
    side: Side,
    lora: lora_lib.LoRAConfig | None = None,
    value_on_policy_trunk: bool = False,
) -> tuple[PyTree, PyTree]:
    """(ShapeDtypeStructs, shardings) of the learner's `params = {"policy", "value"}` in
    the layout `rl.policy_value.init_trainable` builds (full copies, adapters, or a head
    on the policy's trunk), allocating nothing."""
    mesh, rules = side.mesh, side.rules
    lm, lm_sh = phase_memory.abstract_params(config, mesh, rules, "lm")
    scalar, scalar_sh = phase_memory.abstract_params(value_config, mesh, rules, "scalar")
    if lora is None and not value_on_policy_trunk:
        return {"policy": lm, "value": scalar}, {"policy": lm_sh, "value": scalar_sh}
    head = {"score_head": scalar["score_head"]}
    head_sh = {"score_head": scalar_sh["score_head"]}
    if lora is None:
        return {"policy": lm, "value": head}, {"policy": lm_sh, "value": head_sh}
    adapters, adapters_sh = partition.abstract_params(
        lora_lib.init_fn(config, lora), mesh, rules, jax.random.key(0)
    )
    params = {"policy": adapters, "value": dict(head)}
    shardings = {"policy": adapters_sh, "value": dict(head_sh)}
    if not value_on_policy_trunk:
        params["value"]["adapters"] = adapters
        shardings["value"]["adapters"] = adapters_sh
    return params, shardings


def merged_kernels(anchor: PyTree, adapters: PyTree, dtype: Any) -> tuple[PyTree, int]:
    """(the tree the LoRA sampler reads: the anchor with every adapted kernel replaced by
    a merged one in the compute `dtype`, bytes per device of those merged kernels)."""
    kernels = lora_lib.kernel_shardings(anchor, adapters)
    base = {
        layer: {
            parent: {t: anchor[layer][parent][t]["kernel"] for t in projs}
            for parent, projs in mods.items()
        }
        for layer, mods in kernels.items()
    }
    merged = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, jnp.dtype(dtype), sharding=x.sharding), base
    )
    return lora_lib.with_kernels(anchor, merged), memory.tree_bytes_per_device(merged)


def state_structs(
    params: PyTree, param_sh: PyTree, parts: tuple[str, ...], tx: Any, side: Side, seed: int
) -> tuple[Any, Any]:
    """(RLState of ShapeDtypeStructs, its shardings) over `parts` of the params on `side`,
    as `learner.create_state` lays each device set's part out."""
    abstract, shardings, _ = train_state.sharded_state_layout(
        {k: params[k] for k in parts},
        {k: param_sh[k] for k in parts},
        tx,
        side.mesh,
        seed,
        state_cls=learner_lib.RLState,
        reward_stats=a2c.RunningStats.zeros(),
    )
    structs = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
    )
    return structs, shardings


def score_batch(
    side: Side, n: int, lp: int, t: int, moved: bool = False
) -> dict[str, jax.ShapeDtypeStruct]:
    """The rollout batch a score pass reads on `side` (N rows, Lp prompt, T response);
    `moved`: the fields that go to a role's own devices (`learner.SCORE_FIELDS`)."""
    rows = phase_memory.rows
    batch = {
        "prompt_tokens": rows(side, (n, lp), jnp.int32),
        "prompt_lengths": rows(side, (n,), jnp.int32),
        "response_tokens": rows(side, (n, t), jnp.int32),
        "response_mask": rows(side, (n, t), jnp.bool_),
        "sampler_logprobs": rows(side, (n, t), jnp.float32),
        "scores": rows(side, (n,), jnp.float32),
    }
    return {k: batch[k] for k in learner_lib.SCORE_FIELDS} if moved else batch


def update_batch(side: Side, n: int, lp: int, t: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch an update reads on `side` (`learner.UPDATE_FIELDS`)."""
    batch = score_batch(side, n, lp, t)
    batch.update(
        returns=phase_memory.rows(side, (n, t), jnp.float32),
        advantages=phase_memory.rows(side, (n, t), jnp.float32),
        batch_tokens=phase_memory.rows(side, (n,), jnp.float32),
    )
    return {k: batch[k] for k in learner_lib.UPDATE_FIELDS}

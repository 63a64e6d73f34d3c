"""A model's params on a mesh: born sharded, abstract, or streamed from an HF checkpoint.

The mesh-aware half of `rlaif_jax.models.model`: models name logical axes and never see
a Mesh; these functions turn a config's init function into params placed on `mesh`
under `rules` (`rlaif_jax.sharding.rules`).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh

from rlaif_jax.models import model as model_lib
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.models.importers import hf as hf_import
from rlaif_jax.sharding import partition
from rlaif_jax.sharding.rules import Rules

PyTree = Any


def init_params(
    config: ModelConfig, rng: jax.Array, mesh: Mesh, rules: Rules, head: str = "lm"
) -> tuple[PyTree, PyTree]:
    """Random params born sharded on `mesh` under `rules`: (params, shardings)."""
    return partition.init_sharded(model_lib.init_fn(config, head), mesh, rules, rng)


def abstract_params(
    config: ModelConfig, mesh: Mesh, rules: Rules, head: str = "lm"
) -> tuple[PyTree, PyTree]:
    """(ShapeDtypeStruct tree with shardings, NamedSharding tree); allocates nothing."""
    return partition.abstract_params(
        model_lib.init_fn(config, head), mesh, rules, jax.random.key(0)
    )


def import_hf(
    directory: str, mesh: Mesh, rules: Rules, head: str = "lm", **overrides: Any
) -> tuple[PyTree, ModelConfig]:
    """Imports an HF-layout checkpoint directory: returns (params, ModelConfig).

    Params are born sharded on `mesh` under `rules` (each device reads only its slice
    from the memory-mapped files); their dtype is the config's `param_dtype` (override
    with param_dtype=...; `overrides` replace config fields). Raises CheckpointError
    naming missing, unexpected or mis-shaped tensors and their files.
    """
    family, config = hf_import.load_config(directory, **overrides)
    structs, _ = abstract_params(config, mesh, rules, head)
    return hf_import.import_params(directory, family, config, structs, head), config

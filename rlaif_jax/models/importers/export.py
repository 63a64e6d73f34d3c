"""Export a trained policy or reward model to the Hugging Face layout.

Writes `config.json` and `model.safetensors` (or shards + index) that transformers loads
as `<Family>ForCausalLM` (head='lm') or `<Family>ForSequenceClassification` with one
label (head='scalar'). Params are gathered to the host one at a time and written in
the dtype they have (or `dtype`), so importing an export and exporting again is
bit-exact, and an imported checkpoint exports to the same tensors it came from.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from rlaif_jax.fs import atomic_write
from rlaif_jax.models.importers import safetensors_io as sio
from rlaif_jax.models.importers.hf import _flat, param_map
from rlaif_jax.models.importers.hf_config import hf_config_from

PyTree = Any


def export_hf(
    directory: str,
    params: PyTree,
    config: Any,
    family: str,
    head: str = "lm",
    dtype: Any = None,
    extra_config: dict | None = None,
    max_shard_bytes: int | None = None,
) -> list[str]:
    """Writes `params` (of a ModelConfig `config`) as an HF checkpoint in `directory`.

    family: 'gemma', 'gemma2', 'gemma3', 'llama', 'qwen2' or 'qwen3' (from
      `hf_config.config_kwargs` at import time).
    dtype: storage dtype (e.g. ml_dtypes.bfloat16); default: each param's own dtype.
    extra_config: keys merged into config.json (e.g. bos/eos ids of the imported config).
    Every process must call this (params spread over hosts are all-gathered); only
    process 0 writes. Returns the written file names.
    """
    flat = _flat(params)
    maps = param_map(family, config, head)
    missing = [m.path for m in maps if m.path not in flat]
    if missing or len(maps) != len(flat):
        extra = sorted(set(flat) - {m.path for m in maps})
        raise ValueError(
            f"params do not match the {family} layout; missing {missing}, extra {extra}"
        )

    cache: dict[tuple[str, ...], list[tuple[str, np.ndarray]]] = {}

    def produce(path: tuple[str, ...], piece_index: int):
        def run() -> np.ndarray:
            if path not in cache:
                cache.clear()  # at most one gathered param on the host
                cache[path] = by_path[path].split(sio.to_host(flat[path]))
            return cache[path][piece_index][1]

        return run

    by_path = {m.path: m for m in maps}
    out = []
    for m in maps:
        leaf_dtype = np.dtype(dtype if dtype is not None else flat[m.path].dtype)
        for j, piece in enumerate(m.pieces):
            out.append(sio.OutTensor(piece.hf_name, piece.hf_shape, leaf_dtype, produce(m.path, j)))

    hf = hf_config_from(config, family, extra_config)
    hf["torch_dtype"] = str(np.dtype(dtype if dtype is not None else out[0].dtype))
    if head == "scalar":
        hf["architectures"] = [
            hf["architectures"][0].replace("ForCausalLM", "ForSequenceClassification")
        ]
        hf["num_labels"] = 1
        hf["id2label"], hf["label2id"] = {"0": "LABEL_0"}, {"LABEL_0": 0}
    if jax.process_index() != 0:
        for t in out:  # take part in the all-gathers, write nothing
            t.produce()
        return []
    files = sio.write_checkpoint(directory, out, max_shard_bytes=max_shard_bytes)
    atomic_write(os.path.join(directory, sio.CONFIG_FILE), json.dumps(hf, indent=2, sort_keys=True))
    return files + [sio.CONFIG_FILE]

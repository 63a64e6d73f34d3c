"""`rlaif-jax export`: trained models to the Hugging Face layout (a pipeline step).

For each (name, model dir) of `models` — by default the RL policies and the reward
models of an experiment — the model artifact is read (`model_artifact.open_model`) and
written to WORKDIR/<output_dir>/<name>/ as `config.json` + `model.safetensors` (policies
as `<Family>ForCausalLM`, reward models as `<Family>ForSequenceClassification` with one
label, `models.importers.export`) with its tokenizer files and `rlaif_model.json` (the
artifact's model.json: layout and special ids, for readers that want them). Models whose
directory does not exist are skipped and listed, so one step serves every experiment.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import gin
import jax
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from rlaif_jax import artifacts, fs, model_artifact
from rlaif_jax.data import tokenizer_files
from rlaif_jax.data.vocab import stop_ids
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding.rules import Rules

logger = logging.getLogger("rlaif_jax.export")

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, None: None}


def export_model(src_dir: str, out_dir: str, mesh, rules, dtype: str | None = None) -> list[str]:
    """Exports one model artifact (every process calls; process 0 writes)."""
    from rlaif_jax.models.importers.export import export_hf

    art = model_artifact.open_model(src_dir)
    params, _ = model_artifact.load_params(art, mesh, rules, art.head)
    vocab = art.vocab
    ids = {"pad_token_id": int(vocab.pad_id)}
    if vocab.bos_id is not None and vocab.bos_id >= 0:
        ids["bos_token_id"] = int(vocab.bos_id)
    stops = list(stop_ids(vocab))
    if stops:
        ids["eos_token_id"] = stops[0] if len(stops) == 1 else stops
    files = export_hf(
        out_dir,
        params,
        art.config,
        art.family,
        head=art.head,
        dtype=DTYPES[dtype],
        extra_config=ids,
    )
    tokenizer_files.save_tokenizer(vocab, out_dir)
    if jax.process_index() == 0:
        artifacts.atomic_copy(
            os.path.join(src_dir, model_artifact.MODEL_FILE),
            os.path.join(out_dir, "rlaif_model.json"),
        )
    return files


@gin.configurable("export")
def run_stage(
    workdir: str = gin.REQUIRED,
    models: Sequence[Sequence[str]] = (
        ("rlaif", "rl_rlaif"),
        ("rlhf", "rl_rlhf"),
        ("rm_ai", "rm_ai"),
        ("rm_human", "rm_human"),
    ),
    output_dir: str = "export",
    dtype: str | None = None,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
) -> dict[str, float]:
    """Exports every model of `models` found under WORKDIR; dtype: storage dtype
    ('float32', 'bfloat16'; None = the params' own). mesh / rules: where the params are
    restored (the CLI's from gin, `rlaif_jax.configurables`; None = `make_mesh()` /
    `get_rules()`)."""
    if dtype not in DTYPES:
        raise ValueError(f"export.dtype = {dtype!r}: use one of {sorted(d for d in DTYPES if d)}.")
    start = time.time()
    out_root = os.path.join(workdir, output_dir)
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    rules = rules if rules is not None else rules_lib.get_rules()
    exported, skipped = [], []
    for name, ref in models:
        src = os.path.join(workdir, ref)
        if not artifacts.is_complete(src):
            skipped.append(ref)
            continue
        dst = os.path.join(out_root, name)
        if jax.process_index() == 0 and fs.isdir(dst):
            fs.rmtree(dst)  # a rerun rewrites the export whole
        export_model(src, dst, mesh, rules, dtype)
        exported.append(name)
        logger.info("export: %s -> %s", src, dst)
    if not exported:
        raise FileNotFoundError(
            f"export: none of {[r for _, r in models]} is a finished stage in {workdir}."
        )
    metrics = {"num_exported": float(len(exported))}
    artifacts.write_complete(
        out_root, {**metrics, "skipped": skipped, "exported": exported}, time.time() - start
    )
    return metrics

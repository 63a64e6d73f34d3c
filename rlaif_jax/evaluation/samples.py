"""Decode held-out prompts with a policy checkpoint; side-by-side samples for raters.

Samples are written to WORKDIR/eval/samples_<policy>.jsonl ({id, sample, temperature,
context, response}; `sample` numbers the samples of one prompt) and reused when they hold
every (prompt, sample) at the same temperature, so a rerun of evaluation never decodes
twice and a changed decoding setting never reuses stale samples.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from rlaif_jax import artifacts
from rlaif_jax.data.layout import InputLayout
from rlaif_jax.data.vocab import stop_ids
from rlaif_jax.decoding import sample as sample_lib
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.sharding import partition

logger = logging.getLogger("rlaif_jax.evaluation")

# Paper App. E: RL policies pad summaries with trailing periods/spaces (reward hacking);
# those symbols are stripped before human evaluation.
_TRAILING = re.compile(r"(\s*\.)(\s*\.)+\s*$")


def postprocess(text: str) -> str:
    """Strips repeated trailing periods and whitespace (the paper's post-processing)."""
    text = _TRAILING.sub(r"\1", text)
    return text.strip()


def decode_policy(
    config: ModelConfig,
    params: Any,
    vocab: Any,
    layout: InputLayout,
    prompts: Sequence[dict],
    mesh,
    rules,
    *,
    temperature: float,
    batch_size: int,
    seed: int = 0,
    num_samples: int = 1,
) -> list[str]:
    """Responses [N · num_samples] for `prompts` (records with 'context') laid out as the
    policy's `layout` says (up to layout.max_response new tokens; every stop id of `vocab`
    ends a response), decoded in fixed-size batches; prompt-major (response
    i·num_samples + j is sample j of prompt i)."""
    stops = stop_ids(vocab)
    sampler = sample_lib.make_sampler(
        config,
        mesh,
        rules,
        max_new_tokens=layout.max_response,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        eos_id=stops,
        pad_id=vocab.pad_id,
        num_samples=num_samples,
    )
    out: list[str] = []
    rng = jax.random.key(seed)
    t0 = time.time()
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i : i + batch_size])
        real = len(chunk)
        chunk += [chunk[-1]] * (batch_size - real)  # fixed shapes: one compilation
        tokens, lengths = layout.prompt_batch(chunk, vocab)
        res = sampler(
            params,
            partition.global_batch({"t": tokens}, mesh)["t"],
            partition.global_batch({"l": lengths}, mesh)["l"],
            jax.random.fold_in(rng, i),
        )
        toks = np.asarray(jax.device_get(res.tokens))
        lens = np.asarray(jax.device_get(res.lengths))
        for row in range(real * num_samples):
            ids = [int(t) for t in toks[row, : lens[row]] if int(t) not in stops]
            out.append(postprocess(vocab.decode(ids)))
        done = min(i + batch_size, len(prompts))
        rate = done / max(time.time() - t0, 1e-9)
        logger.info(
            "decode: %d/%d prompts (%.1f/s, ETA %.0f s)",
            done,
            len(prompts),
            rate,
            (len(prompts) - done) / max(rate, 1e-9),
        )
    return out


def samples_path(workdir: str, policy: str) -> str:
    return os.path.join(workdir, "eval", f"samples_{policy}.jsonl")


def load_samples(
    path: str, ids: Sequence[str], samples_per_prompt: int = 1, temperature: float = 0.0
) -> list[str] | None:
    """Responses [len(ids) · samples_per_prompt], prompt-major, if `path` holds exactly
    those (id, sample) rows decoded at `temperature`; else None (decode again)."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if any(r.get("temperature") != temperature for r in rows):
        return None
    by_key = {(r["id"], r.get("sample", 0)): r["response"] for r in rows}
    keys = [(i, j) for i in ids for j in range(samples_per_prompt)]
    if set(by_key) != set(keys):
        return None
    return [by_key[k] for k in keys]


def write_samples(
    path: str, prompts: Sequence[dict], responses: Sequence[str], temperature: float = 0.0
) -> None:
    """Writes `responses` [len(prompts) · k] (prompt-major, k samples per prompt)."""
    if jax.process_index() != 0:
        return
    k = len(responses) // max(1, len(prompts))
    rows = (
        json.dumps(
            {
                "id": prompts[n // k]["id"],
                "sample": n % k,
                "temperature": temperature,
                "context": prompts[n // k]["context"],
                "response": r,
            }
        )
        + "\n"
        for n, r in enumerate(responses)
    )
    artifacts.atomic_write(path, "".join(rows))


def write_side_by_side(report_dir: str, prompts, responses: dict[str, list[str]], limit: int = 200):
    """side_by_side.jsonl (every prompt) and side_by_side.html (first `limit`) for raters:
    the first sample of each prompt (responses are prompt-major, k per prompt)."""
    if jax.process_index() != 0:
        return
    names = sorted(responses)
    k = len(responses[names[0]]) // max(1, len(prompts)) if names else 1
    responses = {n: list(responses[n][::k]) for n in names}
    lines = (
        json.dumps({"id": p["id"], "context": p["context"], **{n: responses[n][i] for n in names}})
        + "\n"
        for i, p in enumerate(prompts)
    )
    artifacts.atomic_write(os.path.join(report_dir, "side_by_side.jsonl"), "".join(lines))
    cells = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for i, p in enumerate(prompts[:limit]):
        tds = "".join(f"<td>{html.escape(responses[n][i])}</td>" for n in names)
        rows.append(f"<tr><td><pre>{html.escape(p['context'])}</pre></td>{tds}</tr>")
    page = (
        "<!doctype html><meta charset='utf-8'><title>rlaif_jax side-by-side</title>"
        "<style>td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
        "pre{white-space:pre-wrap;margin:0}</style>"
        f"<table><tr><th>context</th>{cells}</tr>{''.join(rows)}</table>"
    )
    artifacts.atomic_write(os.path.join(report_dir, "side_by_side.html"), page)


def open_policy(workdir: str, policy_dir: str, mesh, rules, task: str | None = None, **layout):
    """(artifact, params on `mesh`, input layout) of the policy saved by `policy_dir` (a
    stage dir under WORKDIR such as 'sft' or 'rl_rlaif', or a path). `layout` values
    (None = unset) may only restate the artifact's (`ModelArtifact.layout_for`)."""
    from rlaif_jax import model_artifact

    art = model_artifact.open_model(
        model_artifact.resolve_model_dir(workdir, policy_dir, "policy directory")
    )
    names = {"max_context": "evaluate.max_prompt_len", "max_response": "evaluate.max_new_tokens"}
    layout = art.layout_for(task, "evaluate", names, **layout)  # refuse before loading
    params, _ = model_artifact.load_params(art, mesh, rules, "lm")
    return art, params, layout

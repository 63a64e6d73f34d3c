"""Text responses from a saved policy: open its artifact on a mesh, decode prompts.

Shared stage support: the evaluation stage decodes held-out prompts with it, and
`sample_pairs` decodes on-policy candidates. Each prompt is laid out as the policy's
input layout says, decoded in fixed-size batches (one compilation), and the response
text is post-processed as the paper does before rating it (App. E).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import jax

from rlaif_jax import model_artifact
from rlaif_jax.data.layout import InputLayout
from rlaif_jax.data.vocab import stop_ids
from rlaif_jax.decoding import buckets
from rlaif_jax.decoding import sample as sample_lib
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.models.importers.safetensors_io import to_host
from rlaif_jax.sharding import partition

logger = logging.getLogger("rlaif_jax.policy_decode")

# Paper App. E: RL policies pad summaries with trailing periods/spaces (reward hacking);
# those symbols are stripped before human evaluation.
_TRAILING = re.compile(r"(\s*\.)(\s*\.)+\s*$")


def postprocess(text: str) -> str:
    """Strips repeated trailing periods and whitespace (the paper's post-processing)."""
    text = _TRAILING.sub(r"\1", text)
    return text.strip()


def strips_trailing_by_default(task: str | None) -> bool:
    """Whether responses of `task` get `postprocess` unless told otherwise: on for
    summarization (paper App. E strips the trailing symbols RL summaries pad with before
    human evaluation), off for dialogue, whose responses the paper shows as written."""
    return task == "summarize"


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
    strip_trailing: bool = False,
    bucketed: bool = True,
) -> list[str]:
    """Responses [N · num_samples] for `prompts` (records with 'context') laid out as the
    policy's `layout` says (up to layout.max_response new tokens; every stop id of `vocab`
    ends a response), decoded in fixed-size batches; prompt-major (response
    i·num_samples + j is sample j of prompt i). strip_trailing: apply `postprocess`.
    bucketed: each batch runs as length groups trimmed to static widths
    (`decoding.buckets`; same tokens as the padded batch, which False runs)."""
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
    if bucketed:  # length groups of each batch at static widths: the padded path's outputs
        groups = buckets.groups_for(batch_size, partition.batch_size_divisor(mesh))
        sampler = buckets.BucketedSampler(sampler, groups=groups, num_samples=num_samples)
    out: list[str] = []
    rng = jax.random.key(seed)
    t0 = time.time()
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i : i + batch_size])
        real = len(chunk)
        chunk += [chunk[-1]] * (batch_size - real)  # fixed shapes: one compilation
        tokens, lengths = layout.prompt_batch(chunk, vocab)
        batch = partition.global_batch_from_full({"t": tokens, "l": lengths}, mesh)
        res = sampler(params, batch["t"], batch["l"], jax.random.fold_in(rng, i))
        toks, lens = to_host(res.tokens), to_host(res.lengths)  # every row, on every process
        for row in range(real * num_samples):
            ids = [int(t) for t in toks[row, : lens[row]] if int(t) not in stops]
            text = vocab.decode(ids)
            out.append(postprocess(text) if strip_trailing else text)
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


def open_policy(
    workdir: str,
    policy_dir: str,
    mesh,
    rules,
    task: str | None = None,
    **layout,
):
    """(artifact, params on `mesh`, input layout) of the policy saved by `policy_dir` (a
    stage dir under WORKDIR such as 'sft' or 'rl_rlaif', or a path). `layout` values
    (None = unset) may only restate the artifact's (`ModelArtifact.layout_for`); a
    contradiction names the binding `evaluate.<field>`."""
    art = model_artifact.open_model(
        model_artifact.resolve_model_dir(workdir, policy_dir, "policy directory")
    )
    layout = art.layout_for(task, "evaluate", **layout)  # refuse before loading
    params, _ = model_artifact.load_params(art, mesh, rules, "lm")
    return art, params, layout

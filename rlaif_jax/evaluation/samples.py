"""The evaluation stage's policy samples on disk, and side-by-side samples for raters.

Samples (decoded by `rlaif_jax.policy_decode`) are written to
WORKDIR/eval/samples_<policy>.jsonl ({id, sample, temperature, context, response};
`sample` numbers the samples of one prompt) and reused when they hold every (prompt,
sample) at the same temperature, so a rerun of evaluation never decodes twice and a
changed decoding setting never reuses stale samples.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence

import jax

from rlaif_jax import artifacts, fs


def samples_path(workdir: str, policy: str) -> str:
    return os.path.join(workdir, "eval", f"samples_{policy}.jsonl")


def load_samples(
    path: str,
    ids: Sequence[str],
    samples_per_prompt: int = 1,
    temperature: float = 0.0,
    strip_trailing: bool = True,
) -> list[str] | None:
    """Responses [len(ids) · samples_per_prompt], prompt-major, if `path` holds exactly
    those (id, sample) rows decoded at `temperature` with the same trailing-symbol
    stripping (rows written before that was recorded were stripped); else None."""
    if not fs.isfile(path):
        return None
    rows = [json.loads(line) for line in fs.read_text(path).split("\n") if line.strip()]
    if any(r.get("temperature") != temperature for r in rows):
        return None
    if any(r.get("strip_trailing", True) != strip_trailing for r in rows):
        return None
    by_key = {(r["id"], r.get("sample", 0)): r["response"] for r in rows}
    keys = [(i, j) for i in ids for j in range(samples_per_prompt)]
    if set(by_key) != set(keys):
        return None
    return [by_key[k] for k in keys]


def write_samples(
    path: str,
    prompts: Sequence[dict],
    responses: Sequence[str],
    temperature: float = 0.0,
    strip_trailing: bool = True,
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
                "strip_trailing": strip_trailing,
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

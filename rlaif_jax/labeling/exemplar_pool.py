"""Few-shot exemplars: the shipped exemplar files, and exemplars drawn at random from a
task's human-labeled pairs (paper App. D: Base 1-shot trials with random exemplars)."""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlaif_jax import fs


@dataclass(frozen=True)
class Exemplar:
    context: str
    response1: str
    response2: str
    label: int  # 1 or 2: the answer the prompt asks for
    rationale: str = ""


@functools.lru_cache(maxsize=32)
def load_exemplars(path: str) -> tuple[Exemplar, ...]:
    """Exemplars from a JSON file `{"exemplars": [{context, response1, response2, label,
    rationale?}, ...]}`; errors name the file and the entry."""
    if not fs.isfile(path):
        raise FileNotFoundError(
            f"Exemplar file not found: {path} (gin: prompt_variant.exemplar_file)"
        )
    try:
        data = json.loads(fs.read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    rows = data.get("exemplars") if isinstance(data, Mapping) else None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected an object with a list field 'exemplars'.")
    out = []
    for i, row in enumerate(rows):
        for field in ("context", "response1", "response2", "label"):
            if field not in row:
                raise ValueError(f"{path}: exemplars[{i}] has no field {field!r}.")
        if row["label"] not in (1, 2):
            raise ValueError(f"{path}: exemplars[{i}].label must be 1 or 2, got {row['label']!r}.")
        out.append(
            Exemplar(
                str(row["context"]),
                str(row["response1"]),
                str(row["response2"]),
                int(row["label"]),
                str(row.get("rationale", "")),
            )
        )
    return tuple(out)


def random_exemplars(
    pairs: Sequence[Mapping[str, Any]],
    num: int,
    seed: int,
    inverted: bool = False,
    exclude_ids: Collection[str] = (),
) -> tuple[Exemplar, ...]:
    """`num` exemplars drawn at random (numpy seed `seed`) from human-labeled pair records
    (`data/records.py`: label = P(response1 preferred)); ties, unrated pairs and the ids in
    `exclude_ids` (e.g. the alignment subset being scored) are never drawn. The exemplar's
    answer is the preferred response, or the other one when the prompt asks which is worse
    (`inverted`). Paper App. D: 10 trials of Base 1-shot with a different random exemplar."""
    exclude = {str(i) for i in exclude_ids}
    pool = [
        p
        for p in pairs
        if float(p["label"]) >= 0 and float(p["label"]) != 0.5 and str(p["id"]) not in exclude
    ]
    if len(pool) < num:
        raise ValueError(
            f"random exemplars: {num} asked, only {len(pool)} labeled pairs to draw from "
            "(ties, unrated pairs and the alignment subset excluded)."
        )
    picks = np.random.default_rng(seed).choice(len(pool), size=num, replace=False)
    out = []
    for i in picks:
        p = pool[int(i)]
        first = float(p["label"]) > 0.5
        answer = 1 if first != inverted else 2
        out.append(Exemplar(str(p["context"]), str(p["response1"]), str(p["response2"]), answer))
    return tuple(out)

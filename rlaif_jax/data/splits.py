"""Deterministic, order-independent record selections: pair-order randomisation,
the labeler-alignment subsets (paper §3.5) and the HH validation/test split (§3.3).

Every decision is a function of (seed, record id) only, so it is the same whichever
process reads the record and in whatever order records arrive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

Record = dict[str, Any]

# Paper §3.5: random downsamples of each training split used to measure AI labeler
# alignment; summarization keeps only high-confidence human labels (Stiennon et al.).
ALIGNMENT_FRACTION = {"summarize": 0.15, "helpful": 0.10, "harmless": 0.10}
HIGH_CONFIDENCE = frozenset({1, 2, 8, 9})
# Paper §3.3: the HH test set is split at random into validation (2/3) and test (1/3).
HH_VALIDATION_FRACTION = 2.0 / 3.0


def uniform(seed: int, key: str, salt: str = "") -> float:
    """A deterministic uniform draw in [0, 1) from (seed, salt, key)."""
    digest = hashlib.blake2b(f"{seed}\x1f{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def swap_pair(rec: Record) -> Record:
    """The same pair with responses swapped and the label flipped (P(response1 preferred))."""
    out = dict(rec)
    out["response1"], out["response2"] = rec["response2"], rec["response1"]
    out["label"] = 1.0 - float(rec["label"])
    if "p_order1" in rec and "p_order2" in rec:
        # AI-labelled pair: after the swap, the new response1 was shown first exactly
        # where the old response2 was (the old swapped order), and vice versa.
        out["p_order1"] = 1.0 - float(rec["p_order2"])
        out["p_order2"] = 1.0 - float(rec["p_order1"])
    if int(rec.get("confidence", 0) or 0) > 0:
        out["confidence"] = 10 - int(
            rec["confidence"]
        )  # 1 = surely response1 ... 9 = surely response2
    if "human_label" in rec and float(rec["human_label"]) >= 0:
        out["human_label"] = 1.0 - float(rec["human_label"])
    return out


def randomize_order(pairs: Iterable[Record], seed: int) -> Iterator[Record]:
    """Unlabeled pairs for the labeler: each pair's order swapped with probability 1/2.

    The human label is kept (in `label`, flipped with the swap) so the label stage can
    copy it into `human_label` for alignment.
    """
    for rec in pairs:
        yield swap_pair(rec) if uniform(seed, rec["id"], "order") < 0.5 else rec


def alignment_subset(
    pairs: Iterable[Record], task: str, seed: int, fraction: float | None = None
) -> Iterator[Record]:
    """The labeler-alignment subset of a training split (paper §3.5).

    Keeps each pair with probability `fraction` (default 15% summarize, 10% helpful /
    harmless) decided by (seed, id); for summarize only confidence in {1, 2, 8, 9}.
    """
    if task not in ALIGNMENT_FRACTION:
        raise ValueError(f"Unknown task {task!r}; expected one of {sorted(ALIGNMENT_FRACTION)}")
    frac = ALIGNMENT_FRACTION[task] if fraction is None else fraction
    for rec in pairs:
        if task == "summarize" and int(rec.get("confidence", 0)) not in HIGH_CONFIDENCE:
            continue
        if uniform(seed, rec["id"], "alignment") < frac:
            yield rec


def hh_eval_split(pairs: Iterable[Record], which: str, seed: int) -> Iterator[Record]:
    """HH test file -> 'validation' (2/3) or 'test' (1/3), decided by (seed, id)."""
    if which not in ("validation", "test"):
        raise ValueError(f"which must be 'validation' or 'test', got {which!r}")
    for rec in pairs:
        in_validation = uniform(seed, rec["id"], "hh_eval") < HH_VALIDATION_FRACTION
        if in_validation == (which == "validation"):
            yield rec

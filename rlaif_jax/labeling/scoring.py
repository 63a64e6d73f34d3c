"""The model-facing engine of the labeler: batched candidate scoring and rationale sampling.

`PromptScorer` is what `labeler.Labeler` and `direct.DirectScorer` need:

- `score(prefix [P], suffixes [B][L_b], candidate_ids [K]) -> [B, K]` full-vocabulary
  log-probs of each candidate at the position after `prefix + suffix_b` (not
  renormalised over K; `debias.renormalize` does that).
- `generate(prefix, suffixes, *, max_new_tokens, temperature, top_k, num_samples, rng)
  -> [B][S] token lists` continuations (EOS and padding removed).

`ModelScorer` implements it on a Flax LM checkpoint through `rlaif_jax.decoding`:
prompts bucketed by length, the shared prefix encoded once per batch, only last-position
logits, fixed batch shapes (padded) so each length bucket compiles once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PromptScorer(Protocol):
    def score(
        self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], candidate_ids: Sequence[int]
    ) -> np.ndarray: ...

    def generate(
        self,
        prefix: Sequence[int],
        suffixes: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_k: int,
        num_samples: int,
        seed: int,
    ) -> list[list[list[int]]]: ...

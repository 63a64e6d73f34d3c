"""How a model reads its inputs: the one place that says what a task's prompt looks like.

An `InputLayout` is part of every model artifact (`rlaif_jax.model_artifact`): the policy
is trained (SFT), sampled (RL, evaluation) and scored (RM) on exactly the token rows it
describes, so RL prompts the policy and the reward model the way each was trained.

    row = [BOS if add_bos] + tokens(context_template with {context}) + tokens(prompt_suffix)
          + tokens(response) + EOS

Task defaults (paper §3): summarization prompts end with "\\nTL;DR:" after the post;
dialogue (helpful, harmless) contexts are the transcript up to the last "Assistant:" and
take nothing more. Lengths default to the paper's 1024 context / 128 response tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from rlaif_jax.data import batching, records

CONTEXT_FIELD = "{context}"
TLDR_SUFFIX = "\nTL;DR:"

# The prompt suffix of each task (paper §3.1-3.3); everything else is shared.
TASK_PROMPT_SUFFIX = {"summarize": TLDR_SUFFIX, "helpful": "", "harmless": ""}
PAPER_MAX_CONTEXT = 1024
PAPER_MAX_RESPONSE = 128


@dataclasses.dataclass(frozen=True)
class InputLayout:
    """The token rows a model reads (see the module docstring).

    context_template: text around the record's context; must contain "{context}".
    prompt_suffix: appended after the templated context ("\\nTL;DR:" for summaries).
    max_context: tokens of BOS + context + suffix at most (the context is cut to fit).
    max_response: tokens of response + EOS at most.
    add_bos: prepend the vocabulary's BOS id (Gemma, Llama expect it; SentencePiece T5-style
      vocabularies and Qwen have none).
    """

    prompt_suffix: str = ""
    max_context: int = PAPER_MAX_CONTEXT
    max_response: int = PAPER_MAX_RESPONSE
    add_bos: bool = False
    context_template: str = CONTEXT_FIELD

    def __post_init__(self):
        if CONTEXT_FIELD not in self.context_template:
            raise ValueError(
                f"InputLayout.context_template {self.context_template!r} has no {CONTEXT_FIELD}."
            )
        if self.max_context < 1 or self.max_response < 1:
            raise ValueError(
                f"InputLayout lengths must be positive: max_context={self.max_context}, "
                f"max_response={self.max_response}."
            )

    def context_text(self, context: str) -> str:
        """The record's context inside the template (no str.format: posts hold braces)."""
        return self.context_template.replace(CONTEXT_FIELD, context)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "layout") -> InputLayout:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"{where}: unknown layout fields {unknown}; known: {sorted(fields)}")
        return cls(**d)

    # -- batches ------------------------------------------------------------------------

    def _templated(self, recs: Sequence[dict]) -> list[dict]:
        if self.context_template == CONTEXT_FIELD:
            return list(recs)
        return [{**r, "context": self.context_text(r["context"])} for r in recs]

    def _batch(self, fn, recs: Sequence[dict], vocab: Any, stats, *lengths: int):
        return fn(
            self._templated(recs),
            vocab,
            *lengths,
            prompt_suffix=self.prompt_suffix,
            add_bos=self.add_bos,
            stats=stats,
        )

    def sft_batch(self, recs: Sequence[dict], vocab: Any, stats=None) -> dict:
        """`batching.sft_batch` rows of this layout (records {context, response})."""
        return self._batch(batching.sft_batch, recs, vocab, stats, *self._lengths)

    def pair_batch(self, recs: Sequence[dict], vocab: Any, stats=None) -> dict:
        """`batching.pair_batch` rows of this layout (records {context, response1/2, label})."""
        return self._batch(batching.pair_batch, recs, vocab, stats, *self._lengths)

    def prompt_batch(self, recs: Sequence[dict], vocab: Any, stats=None):
        """`batching.prompt_batch` (tokens [B, max_context], lengths [B]) of this layout."""
        return self._batch(batching.prompt_batch, recs, vocab, stats, self.max_context)

    @property
    def _lengths(self) -> tuple[int, int]:
        return self.max_context, self.max_response


def task_layout(task: str, add_bos: bool = False, **fields: Any) -> InputLayout:
    """The paper's layout for `task` ('summarize', 'helpful', 'harmless'), with `fields`
    (None values ignored) replacing the defaults."""
    if task not in TASK_PROMPT_SUFFIX:
        raise ValueError(f"Unknown task {task!r}; expected one of {records.TASKS}.")
    base = {"prompt_suffix": TASK_PROMPT_SUFFIX[task], "add_bos": add_bos}
    base.update({k: v for k, v in fields.items() if v is not None})
    return InputLayout(**base)

"""The AI labeler procedure (paper §1.3, §2.3–§2.5): both shown orders, optional
two-step chain of thought, self-consistency, soft labels.

For a batch of pairs the labeler
1. renders each pair in both orders (`render.render_preference`), wraps it in the
   labeler's chat template when it has one (`chat.py`: the user turn holds the prompt,
   the model turn starts with the answer cue), and tokenizes it as shared prefix +
   per-pair suffix (`tokens.tokenize_to_fit`: a context too long for max_len loses its
   middle, keeping the sample's header, its first and last lines and both responses);
2. CoT only: samples S rationales per order after the CoT ending (greedy when S = 1 and
   temperature = 0, up to `cot_max_tokens`), then appends each rationale and the
   standard ending;
3. scores the tokens "1"/"2" after the ending for both orders IN THE SAME CALL, so both
   orders of a pair share a device batch (pairs are sorted by length first);
4. renormalises, maps the swapped order back (`debias.debias`), averages over the S
   rationales (`debias.self_consistency`), inverts 'more harmful' prompts
   (`debias.invert_harmful`), and emits AI-preference records (`data/records.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gin
import numpy as np

from rlaif_jax.labeling import chat, debias, render, tokens
from rlaif_jax.labeling import prompts as P
from rlaif_jax.labeling.scoring import PromptScorer


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LabelerSettings:
    """How to run the labeler (gin: LabelerSettings.*).

    pairs_per_call: pairs scored per scorer call (2x prompts: both orders together).
    max_len: the labeler's prompt budget, tokens of the whole rendered labeling prompt
      (preamble, examples, context, both responses, ending) at most (the paper's labeler
      context, 4096); longer prompts lose the middle of their context
      (`tokens.tokenize_to_fit`). Keep it within the labeler model's own max_len. A
      different concept from a policy's `max_context` / `max_response` (data/layout.py),
      which bound the policy's prompt and response.
    cot_max_tokens: greedy rationale budget (512 in the paper).
    num_samples: self-consistency rationales per order (1 = the paper's default).
    temperature: rationale sampling temperature (0 = greedy; > 0 needs num_samples >= 1).
    top_k: top-k for sampled rationales (40 in the paper).
    chat_template: 'auto' (wrap prompts in the labeler vocabulary's chat template when it
      has one, e.g. an instruction-tuned HF checkpoint), 'none' (plain text prompts), or
      a built-in format 'gemma' | 'llama3' | 'qwen'.
    add_bos: the labeler model expects a BOS token first (e.g. a pretrained Gemma without
      chat template); prompts then start with exactly one `vocab.bos_id`. None (default):
      as the labeler's tokenizer says (`tokens.bos_ids`).
    """

    pairs_per_call: int = 16
    max_len: int = 4096
    cot_max_tokens: int = P.COT_MAX_RATIONALE_TOKENS
    num_samples: int = 1
    temperature: float = 0.0
    top_k: int = P.SELF_CONSISTENCY_TOP_K
    chat_template: str = chat.AUTO
    add_bos: bool | None = None

    def __post_init__(self):
        chat.validate_mode(self.chat_template, "LabelerSettings.chat_template")
        if self.num_samples < 1:
            raise ValueError(f"LabelerSettings.num_samples must be >= 1, got {self.num_samples}")
        if self.num_samples > 1 and self.temperature <= 0:
            raise ValueError(
                "Self-consistency with num_samples > 1 needs temperature > 0 "
                "(gin: LabelerSettings.temperature); greedy samples would all be equal."
            )


def clean_rationale(text: str, ending: str) -> str:
    """A decoded rationale cut before any answer the model wrote itself (the ending is
    appended again in step 2), stripped."""
    cut = text.find(ending)
    return (text[:cut] if cut >= 0 else text).strip()


def human_label(pair: Mapping[str, Any]) -> float:
    """The pair's human label in [0, 1], or −1 when it has none."""
    value = pair.get("human_label", pair.get("label", -1.0))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return -1.0
    return value if 0.0 <= value <= 1.0 else -1.0


class Labeler:
    """Labels preference pairs with a `PromptScorer` and a `PromptVariant`.

    task: the labeled data's task, filling in a variant whose task is None
      (`PromptVariant.with_task`); the variant's task picks the judge prompt's texts
      (summaries for 'summarize', dialogue responses for 'helpful'/'harmless').
    """

    def __init__(
        self,
        scorer: PromptScorer,
        vocab: Any,
        variant: render.PromptVariant,
        settings: LabelerSettings | None = None,
        task: str | None = None,
    ):
        if variant.task is None:
            if task is None:
                raise ValueError(
                    "Labeler: the prompt variant has task=None and no data task was given; "
                    "pass task= or set prompt_variant.task."
                )
            variant = variant.with_task(task)
        self.scorer = scorer
        self.vocab = vocab
        self.variant = variant
        self.settings = settings or LabelerSettings()
        self.chat = chat.chat_format(vocab, self.settings.chat_template)
        self.candidates = tokens.resolve_candidates(
            vocab, variant.ending_string, P.PREFERENCE_CANDIDATES
        )
        self.truncated = 0  # prompts whose context was cut to fit max_len

    # -- prompts --------------------------------------------------------------------

    def _tokenize(
        self, shown: Mapping[str, Any], lead: Sequence[int], rationale: str | None = None
    ) -> tokens.TokenizedPrompt:
        """The (chat-wrapped) prompt of one pair in its shown order; a context too long
        for max_len loses its middle (`tokens.tokenize_to_fit`)."""
        v, s = self.variant, self.settings

        def rendered(context: str) -> render.RenderedPrompt:
            r = render.render_preference(
                v, context, shown["response1"], shown["response2"], rationale=rationale
            )
            return chat.wrap(self.chat, r)

        t = tokens.tokenize_to_fit(
            self.vocab, rendered, shown["context"], lead, s.max_len, s.add_bos
        )
        self.truncated += int(t.truncated)
        return t

    def _orders(self, pair: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        return pair, render.swap(pair)

    # -- scoring --------------------------------------------------------------------

    def _score_orders(self, suffixes_o1, suffixes_o2, prefix) -> tuple[np.ndarray, np.ndarray]:
        """Both orders in one scorer call: [n, 2] log-probs for each order."""
        n = len(suffixes_o1)
        lp = np.asarray(
            self.scorer.score(prefix, list(suffixes_o1) + list(suffixes_o2), self.candidates.ids)
        )
        return lp[:n], lp[n:]

    def _rationales(self, prefix, suffixes: list[tuple[int, ...]], seed: int) -> list[list[str]]:
        """[M][S] cleaned rationale texts for M CoT step-1 prompts."""
        s = self.settings
        greedy = s.num_samples == 1 and s.temperature <= 0
        out = self.scorer.generate(
            prefix,
            suffixes,
            max_new_tokens=s.cot_max_tokens,
            temperature=0.0 if greedy else s.temperature,
            top_k=0 if greedy else s.top_k,
            num_samples=s.num_samples,
            seed=seed,
        )
        ending = self.variant.ending_string
        return [[clean_rationale(self.vocab.decode(list(t)), ending) for t in row] for row in out]

    def _label_group(self, pairs: Sequence[Mapping[str, Any]], seed: int):
        v = self.variant
        orders = [self._orders(p) for p in pairs]
        if not v.cot:
            t1 = [self._tokenize(a, self.candidates.lead) for a, _ in orders]
            t2 = [self._tokenize(b, self.candidates.lead) for _, b in orders]
            prefix, rest = tokens.shared_prefix(t1 + t2)
            lp1, lp2 = self._score_orders(rest[: len(t1)], rest[len(t1) :], prefix)
            return debias.debias(lp1, lp2), [""] * len(pairs)
        # Step 1: rationales after the CoT ending, both orders in one generate call.
        shown = [a for a, _ in orders] + [b for _, b in orders]
        step1 = [self._tokenize(x, ()) for x in shown]
        rats = self._rationales(*tokens.shared_prefix(step1), seed)
        n, S = len(pairs), self.settings.num_samples
        # Step 2: prompt + rationale + ending, every (order, sample) scored in one call.
        step2 = []
        for j, x in enumerate(shown):
            for r in rats[j]:
                step2.append(self._tokenize(x, self.candidates.lead, rationale=r))
        lp = np.asarray(self.scorer.score(*tokens.shared_prefix(step2), self.candidates.ids))
        lp = lp.reshape(2, n, S, -1)
        per_sample = [debias.debias(lp[0, :, k], lp[1, :, k]) for k in range(S)]
        return debias.self_consistency(per_sample), [rats[i][0] for i in range(n)]

    # -- public ---------------------------------------------------------------------

    def label(self, pairs: Sequence[Mapping[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
        """AI-preference records (records.py) for `pairs`, in the input order.

        Pairs are sorted by prompt length and scored `pairs_per_call` at a time;
        `seed` fixes the self-consistency samples (the stage derives it per shard).
        """
        if not pairs:
            return []
        v = self.variant
        lengths = [
            len(render.render_sample(v, p["context"], p["response1"], p["response2"]))
            for p in pairs
        ]
        order = np.argsort(lengths, kind="stable")
        k = max(1, self.settings.pairs_per_call)
        p = np.zeros(len(pairs))
        p1 = np.zeros(len(pairs))
        p2 = np.zeros(len(pairs))
        rationale = [""] * len(pairs)
        for g, lo in enumerate(range(0, len(pairs), k)):
            idx = order[lo : lo + k]
            soft, rats = self._label_group([pairs[i] for i in idx], seed * 100_003 + g)
            if v.inverts_labels:
                soft = debias.invert_harmful(soft)
            p[idx], p1[idx], p2[idx] = soft.p, soft.p_order1, soft.p_order2
            for i, r in zip(idx, rats):
                rationale[i] = r
        return [
            {
                "id": str(pair["id"]),
                "context": pair["context"],
                "response1": pair["response1"],
                "response2": pair["response2"],
                "label": float(p[i]),
                "confidence": int(pair.get("confidence", 0) or 0),
                "p_order1": float(p1[i]),
                "p_order2": float(p2[i]),
                "human_label": human_label(pair),
                "rationale": rationale[i],
            }
            for i, pair in enumerate(pairs)
        ]

"""Training examples for the toy labeler bootstrap: the toy world's generic rating corpus
rendered into the labeling prompts the `label` stage will use.

Each example is `encode(prefix) + encode(suffix) + lead + target` (exactly the labeler's
inference layout, `tokens.tokenize_prompt`) with the loss on the target only:
- preference prompts (Base / Detailed preamble, the corpus's own shown order, so the
  corpus rater's position bias is learned as is): target = its "1" or "2" piece after
  `Preferred Summary=`;
- d-RLAIF prompts (when the corpus carries 1–10 ratings `score1`/`score2`): target = the
  score piece after `SCORE: `;
- optional CoT: a short rationale after `Rationale:` (then EOS) followed, in a second
  example, by the answer after the rationale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlaif_jax.labeling import prompts as P
from rlaif_jax.labeling import render, tokens


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]
    target_start: int  # loss on ids[target_start:]
    # Soft answer: the last id is the target with probability 1 - alt_weight, alt_id with
    # probability alt_weight (alt_weight 0: a hard target).
    alt_id: int = 0
    alt_weight: float = 0.0


def preference_examples(
    corpus: Iterable[Mapping[str, Any]],
    vocab: Any,
    variants: Sequence[render.PromptVariant],
    max_len: int,
    rationale_fn=None,
    soft: bool = False,
) -> list[Example]:
    """One example per corpus pair, cycling through `variants` (so each preamble is seen).

    Corpus rows are preference pairs with `label` = P(rater prefers response1); the target
    is the rater's choice ("1" if label > 0.5 else "2"), ties skipped. `soft`: the answer
    is a soft target, "1" with probability `label` and "2" with 1 − label (distillation of
    a rater's probabilities; the CoT rationale still argues for the likelier choice).
    `rationale_fn(row, choice) -> str` adds CoT examples for CoT variants.
    """
    cands = {
        v.ending_string: tokens.resolve_candidates(vocab, v.ending_string, P.PREFERENCE_CANDIDATES)
        for v in variants
    }
    eos = [] if vocab.eos_id is None or vocab.eos_id < 0 else [int(vocab.eos_id)]
    out = []
    for i, row in enumerate(corpus):
        label = float(row["label"])
        if label == 0.5:
            continue
        choice = 0 if label > 0.5 else 1
        v = variants[i % len(variants)]
        c = cands[v.ending_string]
        args = (row["context"], row["response1"], row["response2"])
        if v.cot:
            if rationale_fn is None:
                raise ValueError(
                    f"CoT variant {v.display_name!r} needs a rationale_fn for bootstrap."
                )
            rat = rationale_fn(row, choice + 1)
            step1 = render.render_preference(v, *args)
            t1 = tokens.tokenize_prompt(vocab, step1.prefix, step1.suffix, (), max_len)
            rat_ids = list(vocab.encode(" " + rat)) + eos
            out.append(Example(t1.prefix + t1.suffix + tuple(rat_ids), t1.length))
            rendered = render.render_preference(v, *args, rationale=rat)
        else:
            rendered = render.render_preference(v, *args)
        t = tokens.tokenize_prompt(vocab, rendered.prefix, rendered.suffix, c.lead, max_len - 1)
        alt = {"alt_id": c.ids[1 - choice], "alt_weight": min(label, 1.0 - label)} if soft else {}
        out.append(Example(t.prefix + t.suffix + (c.ids[choice],), t.length, **alt))
    return out


def direct_examples(
    rows: Iterable[tuple[str, str, int]], vocab: Any, prompt: render.DirectPrompt, max_len: int
) -> list[Example]:
    """d-RLAIF examples from (context, response, score 1..10) triples."""
    c = tokens.resolve_candidates(vocab, prompt.parts()[2], P.SCORE_CANDIDATES)
    out = []
    for context, response, score in rows:
        if not 1 <= int(score) <= 10:
            raise ValueError(f"d-RLAIF bootstrap score must be in 1..10, got {score!r}")
        r = render.render_direct(prompt, context, response)
        t = tokens.tokenize_prompt(vocab, r.prefix, r.suffix, c.lead, max_len - 1)
        out.append(Example(t.prefix + t.suffix + (c.ids[int(score) - 1],), t.length))
    return out


def to_batch(
    examples: Sequence[Example], length: int, pad_id: int, text_loss: bool = False
) -> dict[str, np.ndarray]:
    """Examples -> {tokens [B, L] int32, loss_mask [B, L] f32, attention_mask [B, L] int32},
    the layout of `data.batching.sft_batch` (loss_mask marks the predicted tokens), plus
    the soft answers {alt_tokens [B, L] int32, alt_weight [B, L] f32} of
    `train.losses.next_token_loss` (zero weight for hard answers).

    text_loss: also train on the prompt text itself (next-token loss on every token, like
    the pretraining an instruction-tuned LLM had), with the target tokens weighted so
    they carry half of each example's loss: the dense signal teaches the labeler what a
    post and its faithful summaries look like, the target teaches it to answer.
    """
    B = len(examples)
    toks = np.full((B, length), pad_id, np.int32)
    loss = np.zeros((B, length), np.float32)
    attn = np.zeros((B, length), np.int32)
    alt_toks = np.zeros((B, length), np.int32)
    alt_w = np.zeros((B, length), np.float32)
    for b, ex in enumerate(examples):
        ids = ex.ids[:length]
        toks[b, : len(ids)] = ids
        start = min(ex.target_start, len(ids))
        num_target = max(len(ids) - start, 1)
        if text_loss and start > 1:
            loss[b, 1:start] = 1.0
            loss[b, start : len(ids)] = (start - 1) / num_target
        else:
            loss[b, start : len(ids)] = 1.0
        attn[b, : len(ids)] = 1
        if ex.alt_weight and len(ids) == len(ex.ids):  # the answer is the last token
            alt_toks[b, len(ids) - 1] = ex.alt_id
            alt_w[b, len(ids) - 1] = ex.alt_weight
    return {
        "tokens": toks,
        "loss_mask": loss,
        "attention_mask": attn,
        "alt_tokens": alt_toks,
        "alt_weight": alt_w,
    }

"""d-RLAIF (paper §1.6): the labeler rates a response 1–10; the reward is the expected
score Σ i·P(i) over the renormalised score tokens, rescaled to [−1, 1] by (s − 5.5)/4.5.

`DirectScorer(contexts, responses) -> float32 [B]` is the function RL calls; it
tokenizes with the LABELER's vocabulary (which may differ from the policy's), encodes the
shared preamble once per batch and reads only last-position logits (`scoring.ModelScorer`).

"10" that is not a single piece: SentencePiece vocabularies built by `data/vocab.py`
make "1".."10" atomic, so "10" is one piece. For other vocabularies where " 10" encodes
as "1","0" after the shared lead, `ten_mode='two_piece'` scores it by the chain rule:
P(10) = P("1")·P("0" | …"1") and P(1) = P("1")·(1 − P("0" | …"1")), with one extra
last-position pass on prompts extended by "1" (no other candidate can follow "1" in a
valid answer, so the remaining mass of that pass is "1 and stop"). `ten_mode='error'`
refuses such vocabularies with a clear message. The chain rule reads P("1") in the
column of the candidate "1", so `tokens.resolve_candidates` accepts a two-piece "10"
only when its first piece is that very token and its second decodes to "0".

Prompts longer than `max_len` lose the middle of their context (`tokens.tokenize_to_fit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from rlaif_jax.labeling import chat, render, tokens
from rlaif_jax.labeling import prompts as P
from rlaif_jax.labeling.debias import renormalize

SCORES = np.arange(1, 11, dtype=np.float64)


def expected_score(logprobs: np.ndarray) -> np.ndarray:
    """[B, 10] log-probs of "1".."10" -> [B] Σ i·P(i) with P renormalised over the 10."""
    return renormalize(logprobs) @ SCORES


def rescale(score: np.ndarray) -> np.ndarray:
    """Expected 1–10 score -> [−1, 1] by the affine (s − 5.5)/4.5 (paper §1.6 step 5)."""
    return (np.asarray(score, np.float64) - 5.5) / 4.5


def two_piece_ten(logprobs_first: np.ndarray, logprob_zero_after_one: np.ndarray) -> np.ndarray:
    """Score log-probs when "10" is the two pieces "1","0".

    logprobs_first: [B, 10] log P(first piece) for "1".."9" and (column 9) again "1".
    logprob_zero_after_one: [B] log P("0" | prompt + "1").
    Returns [B, 10] log-probs of the scores 1..10: column 0 = log P("1")+log(1−P("0"|1)),
    column 9 = log P("1")+log P("0"|1).
    """
    lp = np.array(logprobs_first, dtype=np.float64, copy=True)
    z = np.asarray(logprob_zero_after_one, np.float64)
    one = lp[:, 0]
    lp[:, 9] = one + z
    lp[:, 0] = one + np.log1p(-np.minimum(np.exp(z), 1.0 - 1e-12))
    return lp


@dataclasses.dataclass
class DirectScorer:
    """Batched d-RLAIF scorer over a `scoring.PromptScorer` (a labeler checkpoint).

    __call__(contexts [B], responses [B]) -> float32 [B] rewards in [−1, 1].
    expected_scores(contexts, responses) -> float32 [B] expected scores in [1, 10]
    (for `rl.rewards.DirectLabelerReward`, which rescales itself).

    prompt: the task's d-RLAIF prompt (`render.direct_prompt_for(task)`).
    chat_template: 'auto' (the labeler vocabulary's chat template when it has one; the
      model turn then starts with `SCORE: `), 'none', or 'gemma' | 'llama3' | 'qwen'.
    add_bos: the labeler expects a BOS token first (see `tokens.tokenize_prompt`; None:
      as its tokenizer says).
    """

    scorer: object  # scoring.PromptScorer
    vocab: object
    prompt: render.DirectPrompt = dataclasses.field(default_factory=render.DirectPrompt)
    ten_mode: str = "auto"  # 'auto' (single piece, else two-piece), 'two_piece', 'error'
    max_len: int | None = None
    chat_template: str = chat.AUTO
    add_bos: bool | None = None

    def __post_init__(self):
        chat.validate_mode(self.chat_template, "DirectScorer.chat_template")
        self.chat = chat.chat_format(self.vocab, self.chat_template)
        if self.ten_mode not in ("auto", "two_piece", "error"):
            raise ValueError(
                f"DirectScorer.ten_mode must be auto|two_piece|error, got {self.ten_mode!r}"
            )
        ending = self.prompt.parts()[2]
        self._cut = 0  # trailing whitespace of the ending read as part of the answer
        try:
            self.candidates = self._resolve(ending, "")
        except tokens.CandidateTokenError:
            # Byte-level BPEs (GPT-2 / Qwen style) fold the space of `SCORE: ` into the
            # number (" 7" is one piece): end the prompt at `SCORE:` and read " 1".." 10".
            stripped = ending.rstrip()
            if stripped == ending or not stripped:
                raise
            self.candidates = self._resolve(stripped, ending[len(stripped) :])
            self._cut = len(ending) - len(stripped)

    def _resolve(self, ending: str, space: str) -> tokens.Candidates:
        allow = (space + "10",) if self.ten_mode != "error" else ()
        cands = tuple(space + c for c in P.SCORE_CANDIDATES)
        return tokens.resolve_candidates(self.vocab, ending, cands, allow_two_piece=allow)

    def render_prompt(self, context: str, response: str) -> render.RenderedPrompt:
        """The prompt text the labeler reads (chat-wrapped when it has a template)."""
        r = render.render_direct(self.prompt, context, response)
        if self._cut:
            k = self._cut
            r = render.RenderedPrompt(r.prefix, r.suffix[:-k], r.cue[:-k], r.user)
        return chat.wrap(self.chat, r)

    def score_logprobs(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """[B, 10] log-probs of the scores 1..10 (not yet renormalised)."""
        if len(contexts) != len(responses):
            raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
        toks = [
            tokens.tokenize_to_fit(
                self.vocab,
                lambda ctx, r=r: self.render_prompt(ctx, r),
                c,
                self.candidates.lead,
                self.max_len,
                self.add_bos,
            )
            for c, r in zip(contexts, responses)
        ]
        prefix, suffixes = tokens.shared_prefix(toks)
        lp = self.scorer.score(prefix, suffixes, self.candidates.ids)
        if self.candidates.multi:
            (_, (first, second)) = self.candidates.multi[0]
            ext = [s + (first,) for s in suffixes]
            zero = np.asarray(self.scorer.score(prefix, ext, (second,)))[:, 0]
            lp = two_piece_ten(lp, zero)
        return np.asarray(lp, np.float64)

    def expected_scores(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if not len(contexts):
            return np.zeros((0,), np.float32)
        return expected_score(self.score_logprobs(contexts, responses)).astype(np.float32)

    def __call__(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return rescale(self.expected_scores(contexts, responses)).astype(np.float32)

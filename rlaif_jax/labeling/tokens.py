"""Prompt tokenization for the labeler: candidate-token resolution, prefix/suffix ids,
truncation and length buckets.

A prompt is always tokenized as `encode(prefix) + encode(suffix) + lead`, where `lead`
are the tokens (if any) the vocabulary puts between the ending and the answer piece
(e.g. SentencePiece's "▁" before " 10" after `SCORE: `). The labeler is trained and
scored on exactly this sequence, so what it reads at the last position is the piece
that follows the ending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlaif_jax.data.vocab import Vocab


class CandidateTokenError(ValueError):
    """A candidate answer is not one token after the ending in this vocabulary."""


@dataclass(frozen=True)
class Candidates:
    """Token ids of the candidate answers (K) as read after an ending.

    lead: tokens appended to every prompt before reading the candidate distribution
      (empty for SentencePiece's "=1" -> "=", "1").
    ids: [K] the piece id of each candidate at the position after `lead`.
    texts: the candidate strings.
    multi: for candidates that are two pieces (e.g. "10" = "1","0" in some vocabularies),
      {index: (first_id, second_id)}; empty when every candidate is one piece.
    """

    lead: tuple[int, ...]
    ids: tuple[int, ...]
    texts: tuple[str, ...]
    multi: tuple[tuple[int, tuple[int, int]], ...] = ()


def _pieces(vocab: Vocab, ids: Sequence[int]) -> list[str]:
    return [vocab.decode([i]) for i in ids]


def resolve_candidates(
    vocab: Vocab, ending: str, candidates: Sequence[str], allow_two_piece: Sequence[str] = ()
) -> Candidates:
    """Finds the id of the piece that follows `ending` for each candidate.

    Compares `encode(ending)` with `encode(ending + c)`: the latter must extend the former
    by a lead shared by all candidates plus exactly one piece (or, for candidates named
    in `allow_two_piece`, two pieces). Raises `CandidateTokenError` naming the candidate
    and its pieces otherwise, e.g. when the vocabulary merges "=1" into one piece.
    """
    base = list(vocab.encode(ending))
    rests = {}
    for c in candidates:
        full = list(vocab.encode(ending + c))
        if full[: len(base)] != base:
            raise CandidateTokenError(
                f"Candidate {c!r} merges with the end of the ending {ending!r} in this "
                f"vocabulary: {ending!r} -> {_pieces(vocab, base)}, {ending + c!r} -> "
                f"{_pieces(vocab, full)}. Use a vocabulary where {c!r} is a user-defined "
                "symbol (data/vocab.py SCORE_SYMBOLS) or an ending that ends at a piece boundary."
            )
        rests[c] = full[len(base) :]
    single = [c for c in candidates if c not in allow_two_piece]
    if not single:
        raise CandidateTokenError("At least one candidate must be resolvable as a single piece.")
    lead_len = min(len(rests[c]) for c in single) - 1
    lead = rests[single[0]][:lead_len] if lead_len >= 0 else []
    ids, multi = [], []
    for k, c in enumerate(candidates):
        rest = rests[c]
        tail = rest[len(lead) :]
        ok_lead = rest[: len(lead)] == lead
        if ok_lead and len(tail) == 1:
            ids.append(tail[0])
        elif ok_lead and len(tail) == 2 and c in allow_two_piece:
            ids.append(tail[0])
            multi.append((k, (tail[0], tail[1])))
        else:
            raise CandidateTokenError(
                f"Candidate {c!r} after the ending {ending!r} is not a single token in this "
                f"vocabulary: it encodes as {_pieces(vocab, rest)} (lead shared by the other "
                f"candidates: {_pieces(vocab, lead)}). Labels read one token per candidate; "
                "use a vocabulary with the candidates as user-defined symbols."
            )
    if len(set(ids)) != len(ids) and not multi:
        raise CandidateTokenError(f"Candidates {list(candidates)} share token ids {ids}.")
    return Candidates(tuple(lead), tuple(ids), tuple(candidates), tuple(multi))


@dataclass(frozen=True)
class TokenizedPrompt:
    prefix: tuple[int, ...]  # shared across the batch
    suffix: tuple[int, ...]  # per prompt, ends with the candidates' lead
    truncated: bool = False

    @property
    def length(self) -> int:
        return len(self.prefix) + len(self.suffix)


def bos_ids(vocab: Vocab, add_bos: bool | None) -> tuple[int, ...]:
    """(bos_id,) when `add_bos` and the vocabulary has a BOS id (>= 0), else ().
    add_bos None: as the vocabulary's checkpoint expects (`HFTokenizerVocabulary.adds_bos`;
    SentencePiece vocabularies of this codebase have no BOS)."""
    if add_bos is None:
        add_bos = bool(getattr(vocab, "adds_bos", False))
    bos = getattr(vocab, "bos_id", None) if add_bos else None
    return (int(bos),) if bos is not None and int(bos) >= 0 else ()


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def tokenize_prompt(
    vocab: Vocab,
    prefix: str,
    suffix: str,
    lead: Sequence[int] = (),
    max_len: int | None = None,
    add_bos: bool | None = False,
) -> TokenizedPrompt:
    """The tokens of the whole text `prefix + suffix`, then `lead`, split where the
    prefix's own tokens stop agreeing with them (a tokenizer may merge across the
    boundary, e.g. a Gemma piece spanning "\n"; the model reads exactly what a reader of
    the whole text would). Over-long suffixes lose tokens from their START (the beginning
    of the context), keeping the sample's end and the ending.

    add_bos: the model expects a BOS token first (None: as `bos_ids` decides from the
    vocabulary); the prefix ids then start with exactly one `vocab.bos_id` (none is added
    when the text already encodes to it, e.g. a chat template's '<bos>', and nothing when
    the vocabulary has no BOS).
    """
    own = tuple(vocab.encode(prefix))
    whole = tuple(vocab.encode(prefix + suffix))
    cut = _common_length(own, whole)
    p, s = whole[:cut], whole[cut:] + tuple(lead)
    bos = bos_ids(vocab, add_bos)
    if bos and p[:1] != bos:
        p = bos + p
    truncated = False
    if max_len is not None and len(p) + len(s) > max_len:
        keep = max_len - len(p)
        if keep < 8:
            raise ValueError(
                f"The shared prompt prefix is {len(p)} tokens, leaving {keep} of max_len={max_len} "
                "for the pair: raise the labeler's max_len or use fewer shots."
            )
        s, truncated = s[-keep:], True
    return TokenizedPrompt(p, s, truncated)


def shared_prefix(
    prompts: Sequence[TokenizedPrompt],
) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """(prefix, suffixes) for one scorer call: the tokens every prompt starts with, and
    each prompt's rest. Prompts of one variant share their prefix tokens; where the
    boundary tokenized differently for some (`tokenize_prompt`), the common part is kept
    and the rest moves into those suffixes, so prefix + suffix is each prompt unchanged."""
    if not prompts:
        return (), []
    first = prompts[0].prefix
    n = min(_common_length(first, t.prefix) for t in prompts)
    return first[:n], [t.prefix[n:] + t.suffix for t in prompts]


def length_bucket(n: int, max_len: int, minimum: int = 16) -> int:
    """Padded length for a sequence of n tokens: the next power of two (>= minimum),
    capped at max_len, so a labeling run compiles a handful of shapes."""
    b = minimum
    while b < n:
        b *= 2
    return max(n, min(b, max_len))

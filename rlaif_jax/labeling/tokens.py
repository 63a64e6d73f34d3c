"""Prompt tokenization for the labeler: candidate-token resolution, prefix/suffix ids,
truncation and length buckets.

A prompt is always tokenized as `encode(prefix) + encode(suffix) + lead`, where `lead`
are the tokens (if any) the vocabulary puts between the ending and the answer piece
(e.g. SentencePiece's "▁" before " 10" after `SCORE: `). The labeler is trained and
scored on exactly this sequence, so what it reads at the last position is the piece
that follows the ending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    two_piece = {k for k, _ in multi}
    for k, (first, second) in multi:
        _check_two_piece(vocab, ending, candidates, ids, two_piece, k, (first, second))
    if len(set(ids)) != len(ids) and not multi:
        raise CandidateTokenError(f"Candidates {list(candidates)} share token ids {ids}.")
    return Candidates(tuple(lead), tuple(ids), tuple(candidates), tuple(multi))


def _check_two_piece(
    vocab: Vocab,
    ending: str,
    candidates: Sequence[str],
    ids: Sequence[int],
    two_piece: set[int],
    k: int,
    pieces_ids: tuple[int, int],
) -> None:
    """A two-piece candidate (e.g. "10" = "1","0") is scored by the chain rule from the
    log-prob of its first piece, read in the column of the single-piece candidate that
    is its text's start (e.g. "1"). That is only P(first piece) when the first piece IS
    that candidate's token and the second piece is the rest of the text; raises
    `CandidateTokenError` naming the pieces otherwise (e.g. "10" split into a "1" piece
    other than candidate "1"'s token, then "0")."""
    c, (first, second) = candidates[k], pieces_ids
    heads = [j for j, t in enumerate(candidates) if j not in two_piece and c.startswith(t)]
    head = max(heads, key=lambda j: len(candidates[j]), default=None)
    pieces = _pieces(vocab, pieces_ids)
    if head is None:
        raise CandidateTokenError(
            f"Two-piece candidate {c!r} after {ending!r} encodes as {pieces}, but no other "
            f"candidate of {list(candidates)} is its first part: the chain rule has no "
            "first-piece log-prob to read."
        )
    rest = c[len(candidates[head]) :]
    if ids[head] != first or vocab.decode([second]) != rest:
        raise CandidateTokenError(
            f"Two-piece candidate {c!r} after {ending!r} encodes as pieces {pieces} (ids "
            f"{[first, second]}); the chain rule reads its first piece as candidate "
            f"{candidates[head]!r} (id {ids[head]}, piece {_pieces(vocab, [ids[head]])}) and "
            f"needs the second to decode to {rest!r}. This vocabulary splits {c!r} "
            "differently: use one where it is a single piece (data/vocab.py SCORE_SYMBOLS) "
            "or ten_mode='error'."
        )


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


# encode(prefix) of the shared prefix, once per (vocabulary, prefix) rather than once per
# prompt: it is the same preamble (and exemplars) for every pair of a labeling run. The
# vocabulary object is kept with its ids, so its id() cannot be reused while cached.
_PREFIX_IDS: dict[tuple[int, str], tuple[Any, tuple[int, ...]]] = {}


def _prefix_ids(vocab: Vocab, prefix: str) -> tuple[int, ...]:
    key = (id(vocab), prefix)
    hit = _PREFIX_IDS.get(key)
    if hit is None or hit[0] is not vocab:
        if len(_PREFIX_IDS) >= 64:
            _PREFIX_IDS.clear()
        hit = _PREFIX_IDS[key] = (vocab, tuple(vocab.encode(prefix)))
    return hit[1]


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
    of the sample), keeping its end and the ending; the labeler, d-RLAIF scorer and
    harmless judge use `tokenize_to_fit` instead, which elides the context's middle.

    add_bos: the model expects a BOS token first (None: as `bos_ids` decides from the
    vocabulary); the prefix ids then start with exactly one `vocab.bos_id` (none is added
    when the text already encodes to it, e.g. a chat template's '<bos>', and nothing when
    the vocabulary has no BOS).
    """
    own = _prefix_ids(vocab, prefix)
    whole = tuple(vocab.encode(prefix + suffix))
    cut = _common_length(own, whole)
    p, s = whole[:cut], whole[cut:] + tuple(lead)
    bos = bos_ids(vocab, add_bos)
    if bos and p[:1] != bos:
        p = bos + p
    truncated = False
    if max_len is not None and len(p) + len(s) > max_len:
        keep = _room(len(p), max_len)
        s, truncated = s[-keep:], True
    return TokenizedPrompt(p, s, truncated)


def _room(prefix_len: int, max_len: int) -> int:
    """Tokens left for the pair after the shared prefix; raises when there is no room."""
    keep = max_len - prefix_len
    if keep < 8:
        raise ValueError(
            f"The shared prompt prefix is {prefix_len} tokens, leaving {keep} of "
            f"max_len={max_len} for the pair: raise the labeler's max_len or use fewer shots."
        )
    return keep


class _Rendered(Protocol):
    prefix: str
    suffix: str


ELISION = " [...] "  # stands in for the middle of a context cut to fit max_len


def elide_middle(text: str, keep: int) -> str:
    """`text` with its middle replaced by `ELISION`, keeping about `keep` characters: the
    first half from its start, the rest from its end, cut at word boundaries where the
    kept parts have any. `text` itself when it has at most `keep` characters."""
    if keep >= len(text):
        return text
    keep = max(0, keep)
    h = keep - keep // 2
    head, tail = text[:h], text[len(text) - keep // 2 :] if keep // 2 else ""
    if head and not text[h].isspace() and not head[-1].isspace():
        cut = max(head.rfind(" "), head.rfind("\n"))
        head = head[:cut] if cut > 0 else head  # drop the half word
    start = len(text) - len(tail)
    if tail and not tail[0].isspace() and not text[start - 1].isspace():
        cut = min((i for i in (tail.find(" "), tail.find("\n")) if i >= 0), default=-1)
        tail = tail[cut:] if cut >= 0 else tail
    return (head.rstrip() + ELISION + tail.lstrip()).strip(" ")


def tokenize_to_fit(
    vocab: Vocab,
    render_fn: Callable[[str], _Rendered],
    context: str,
    lead: Sequence[int] = (),
    max_len: int | None = None,
    add_bos: bool | None = False,
) -> TokenizedPrompt:
    """`tokenize_prompt` of `render_fn(context)` (a `render.RenderedPrompt`, chat-wrapped
    or not), with the CONTEXT's middle elided (`elide_middle`) when the prompt is longer
    than `max_len`.

    Everything else survives truncation: the shared prefix, the sample's header ("Text -",
    "Context -"), the context's first lines (a post's SUBREDDIT and TITLE, a dialogue's
    opening), its last lines, both responses, any rationale and the ending. The middle
    is cut rather than the end because the end carries what the responses answer: a
    dialogue's last Human turn, and often a post's actual question. The longest kept
    context that fits is found by bisection over its characters, each candidate
    tokenized whole. Prompts that fit are returned exactly as `tokenize_prompt` gives
    them (truncated=False). If even an empty context does not fit (responses longer than
    max_len), the elided prompt loses tokens from the start of its suffix as
    `tokenize_prompt` does. Raises ValueError when the shared prefix leaves < 8 tokens.
    """

    def encode(n: int) -> TokenizedPrompt:
        r = render_fn(elide_middle(context, n))
        return tokenize_prompt(vocab, r.prefix, r.suffix, lead, None, add_bos)

    whole = encode(len(context))
    if max_len is None or whole.length <= max_len:
        return whole
    _room(len(whole.prefix), max_len)
    best = encode(0)
    if best.length > max_len:
        r = render_fn(elide_middle(context, 0))
        return tokenize_prompt(vocab, r.prefix, r.suffix, lead, max_len, add_bos)
    lo, hi = 0, len(context)  # encode(lo) fits, encode(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t = encode(mid)
        if t.length <= max_len:
            lo, best = mid, t
        else:
            hi = mid
    return TokenizedPrompt(best.prefix, best.suffix, True)


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

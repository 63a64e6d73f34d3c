"""labeling/tokens.py: prompt tokenization (the whole text's tokens across a merging
shared-prefix boundary, BOS, truncation, fitting by eliding the context's middle) and
candidate token resolution (single pieces, a shared lead, two-piece "10")."""

from __future__ import annotations

import pytest

from rlaif_jax.labeling import direct, render, tokens
from rlaif_jax.labeling import prompts as P
from tests.unit.labeling._helpers import AlwaysFirst, CharVocab, IdVocab


class MergingVocab:
    """Characters as ids, except that "\\nT" is one token (as a Gemma piece may span a
    newline): encode(prefix) + encode(suffix) != encode(prefix + suffix)."""

    MERGED = 1000
    bos_id, eos_id, pad_id = 1, 2, 0

    def encode(self, s):
        out, i = [], 0
        while i < len(s):
            if s.startswith("\nT", i):
                out.append(self.MERGED)
                i += 2
            else:
                out.append(ord(s[i]))
                i += 1
        return out

    def decode(self, ids):
        return "".join("\nT" if i == self.MERGED else chr(i) for i in ids)


def test_tokenize_prompt_keeps_the_whole_texts_tokens_across_a_merging_boundary():
    v = MergingVocab()
    prefix, suffix = "Rate this.\n", "Text - a post"
    assert v.encode(prefix) + v.encode(suffix) != v.encode(prefix + suffix)
    t = tokens.tokenize_prompt(v, prefix, suffix, lead=(7,))
    assert t.prefix + t.suffix == tuple(v.encode(prefix + suffix)) + (7,)
    assert t.prefix == tuple(v.encode("Rate this."))  # the merged piece went to the suffix
    with_bos = tokens.tokenize_prompt(v, prefix, suffix, add_bos=True)
    assert with_bos.prefix[0] == v.bos_id and with_bos.prefix[1:] == t.prefix


def test_shared_prefix_moves_a_differing_boundary_into_the_suffixes():
    v = MergingVocab()
    a = tokens.tokenize_prompt(v, "Rate this.\n", "Text - one")  # merges at the boundary
    b = tokens.tokenize_prompt(v, "Rate this.\n", "Context - two")  # does not
    prefix, rest = tokens.shared_prefix([a, b])
    assert prefix == a.prefix and len(prefix) < len(b.prefix)
    for t, r in zip((a, b), rest):
        assert prefix + r == t.prefix + t.suffix
    assert tokens.shared_prefix([]) == ((), [])


class GreedyVocab:
    """Longest-match tokenizer over a fixed piece list (test-only stand-in)."""

    def __init__(self, pieces):
        self.pieces = sorted(set(pieces), key=len, reverse=True)
        self.ids = {p: i + 3 for i, p in enumerate(sorted(set(pieces)))}
        self.inv = {i: p for p, i in self.ids.items()}
        self.eos_id, self.pad_id, self.bos_id = 1, 0, None

    def encode(self, s):
        out, i = [], 0
        while i < len(s):
            p = next(p for p in self.pieces if s.startswith(p, i))
            out.append(self.ids[p])
            i += len(p)
        return out

    def decode(self, ids):
        return "".join(self.inv.get(i, "") for i in ids)


CHARS = list("abcdefghijklmnopqrstuvwxyzPSRC:= 0123456789EO")


def test_resolve_candidates_single_lead_and_errors():
    v = GreedyVocab(CHARS + ["Preferred", " Summary", "10"])
    c = tokens.resolve_candidates(v, "Preferred Summary=", ("1", "2"))
    assert c.lead == () and c.ids == (v.ids["1"], v.ids["2"])
    # "SCORE: " then "10": the vocabulary puts a shared lead? Here ' ' is in the ending.
    d = tokens.resolve_candidates(v, "SCORE: ", P.SCORE_CANDIDATES)
    assert d.ids[-1] == v.ids["10"] and not d.multi
    # A vocabulary that merges "=1" into one piece cannot be read token by token.
    merged = GreedyVocab(CHARS + ["Preferred", " Summary", "=1"])
    with pytest.raises(tokens.CandidateTokenError, match="merges with the end of the ending"):
        tokens.resolve_candidates(merged, "Preferred Summary=", ("1", "2"))
    # "10" as two pieces: an error unless two-piece scoring is allowed.
    with pytest.raises(tokens.CandidateTokenError, match="'10'.*not a single token"):
        tokens.resolve_candidates(GreedyVocab(CHARS), "SCORE: ", P.SCORE_CANDIDATES)
    g = GreedyVocab(CHARS)
    t = tokens.resolve_candidates(g, "SCORE: ", P.SCORE_CANDIDATES, ("10",))
    assert dict(t.multi) == {9: (g.ids["1"], g.ids["0"])} and t.ids[9] == g.ids["1"]


@pytest.fixture(scope="module")
def sp_vocab(tmp_path_factory):
    from rlaif_jax.data import vocab as V

    texts = []
    for task in P.TASKS:
        for v in render.variants_for_task(task):
            r = render.render_preference(
                v, "the cat sat on the mat", "a cat", "the mat", rationale="fine" if v.cot else None
            )
            texts.append(r.text)
    texts.append(render.render_direct(render.DirectPrompt(), "post", "sum").text)
    path = V.train_sentencepiece(texts * 2, str(tmp_path_factory.mktemp("sp") / "sp"), 300)
    return V.sentencepiece_vocabulary(path)


def test_resolve_candidates_sentencepiece(sp_vocab):
    c = tokens.resolve_candidates(sp_vocab, P.SUMMARY_ENDING, P.PREFERENCE_CANDIDATES)
    assert [sp_vocab.decode([i]) for i in c.ids] == ["1", "2"] and c.lead == ()
    # `SCORE: ` ends in a space that SentencePiece folds into the next piece: a shared
    # lead "▁" sits between the ending and every score piece, "10" included.
    d = tokens.resolve_candidates(sp_vocab, P.DIRECT_ENDING, P.SCORE_CANDIDATES)
    assert len(d.lead) == 1 and [sp_vocab.decode([i]) for i in d.ids] == list(P.SCORE_CANDIDATES)
    # In context, the prompt + lead + candidate is exactly how "... SCORE: 7" encodes.
    r = render.render_direct(render.DirectPrompt(), "post", "sum")
    t = tokens.tokenize_prompt(sp_vocab, r.prefix, r.suffix, d.lead)
    assert list(t.suffix) + [d.ids[6]] == list(sp_vocab.encode(r.suffix + "7"))


def test_tokenize_truncates_start_of_suffix(sp_vocab):
    t = tokens.tokenize_prompt(
        sp_vocab, "short prefix\n", "the cat " * 50 + "Preferred Summary=", max_len=40
    )
    assert t.truncated and t.length == 40
    assert sp_vocab.decode(list(t.suffix)).endswith("Preferred Summary=")
    assert tokens.length_bucket(17, 512) == 32 and tokens.length_bucket(600, 512) == 600


def test_add_bos_without_template():
    v = IdVocab()
    t = tokens.tokenize_prompt(v, "pre\n", "suf", add_bos=True)
    assert t.prefix == (3,) + tuple(v.encode("pre\n")) and t.suffix == tuple(v.encode("suf"))
    assert tokens.tokenize_prompt(v, "pre\n", "suf").prefix == tuple(v.encode("pre\n"))
    # Truncation keeps the BOS in the prefix and cuts the suffix's start.
    t = tokens.tokenize_prompt(v, "p", "abcdefghijklmnop", add_bos=True, max_len=12)
    assert t.prefix[0] == 3 and t.length == 12 and v.decode(t.suffix) == "fghijklmnop"[1:]

    class NoBos(IdVocab):
        bos_id = -1  # the project's SentencePiece vocabularies

    assert tokens.tokenize_prompt(NoBos(), "pre", "s", add_bos=True).prefix == tuple(
        v.encode("pre")
    )


class SplitTenVocab(CharVocab):
    """Characters, except that "10" is two pieces whose first is NOT the token of "1":
    a piece ONE_OF_TEN (decoding to "1") followed by "0"."""

    ONE_OF_TEN = 99_000

    def encode(self, s):
        out = []
        for i, ch in enumerate(s):
            if ch == "1" and s.startswith("10", i):
                out.append(self.ONE_OF_TEN)
            else:
                out.append(ord(ch) + 3)
        return out

    def decode(self, ids):
        return "".join("1" if i == self.ONE_OF_TEN else chr(i - 3) for i in ids if i >= 3)


def test_two_piece_ten_must_start_with_the_token_of_one():
    v = SplitTenVocab()
    with pytest.raises(tokens.CandidateTokenError, match=r"pieces \['1', '0'\].*99000"):
        direct.DirectScorer(AlwaysFirst(v), v)
    with pytest.raises(tokens.CandidateTokenError, match="first piece"):
        tokens.resolve_candidates(v, "SCORE: ", direct.P.SCORE_CANDIDATES, ("10",))
    # The vocabulary where "10" really is "1","0" still scores by the chain rule.
    ok = tokens.resolve_candidates(CharVocab(), "SCORE: ", direct.P.SCORE_CANDIDATES, ("10",))
    assert dict(ok.multi) == {9: (ok.ids[0], ord("0") + 3)}


def test_prompts_that_fit_tokenize_exactly_as_before():
    v = MergingVocab()
    prefix, ctx = "Rate this.\n", "a post about cats"

    def rendered(c):
        return render.RenderedPrompt(prefix, f"Text - {c}\nEnd=", "End=", f"Text - {c}")

    for bos in (False, True):
        want = tokens.tokenize_prompt(v, prefix, f"Text - {ctx}\nEnd=", (7,), 256, bos)
        got = tokens.tokenize_to_fit(v, rendered, ctx, (7,), 256, bos)
        assert got == want and not got.truncated
    with pytest.raises(ValueError, match="shared prompt prefix"):
        tokens.tokenize_to_fit(v, rendered, ctx * 20, (), len(prefix) + 4)


def test_elide_middle_cuts_at_word_boundaries():
    text = "alpha beta gamma delta epsilon zeta"
    assert tokens.elide_middle(text, 100) == text
    out = tokens.elide_middle(text, 16)
    assert out.startswith("alpha") and out.endswith("zeta") and tokens.ELISION in out
    assert all(w in text.split() for w in out.replace(tokens.ELISION, " ").split())
    assert tokens.elide_middle(text, 0) == tokens.ELISION.strip()

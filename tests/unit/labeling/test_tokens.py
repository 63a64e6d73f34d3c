"""Prompt tokenization (`labeling.tokens`): the labeler reads the tokens of the whole
prompt text even where its tokenizer merges across the shared-prefix boundary."""

from rlaif_jax.labeling import tokens


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

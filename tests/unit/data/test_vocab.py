"""SentencePiece training (deterministic, atomic score pieces) and the seqio wrapper."""

import random

import pytest

from rlaif_jax.data import batching, vocab


def _corpus():
    rng = random.Random(0)
    words = "the cat sat on my mat and we went to a store because summary post title".split()
    return [
        " ".join(rng.choice(words) for _ in range(10))
        + f" Preferred Summary={rng.randint(1, 2)} Score: {rng.randint(1, 10)}"
        for _ in range(300)
    ]


def test_train_is_deterministic_and_scores_are_single_pieces(tmp_path):
    import sentencepiece as spm

    a = vocab.train_sentencepiece(_corpus(), str(tmp_path / "a" / "sp"), vocab_size=120)
    b = vocab.train_sentencepiece(_corpus(), str(tmp_path / "b" / "sp"), vocab_size=120)
    assert open(a, "rb").read() == open(b, "rb").read()
    sp = spm.SentencePieceProcessor(model_file=a)
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    for i in range(1, 11):
        assert sp.encode(f"Preferred Summary={i}", out_type=str)[-1] == str(i)
        assert sp.encode(f"Score: {i}", out_type=str)[-1] == str(i)
        assert sp.encode(f"Score: {i}", out_type=str)[-2] in ("▁", ":")
    with pytest.raises(ValueError, match="non-empty"):
        vocab.train_sentencepiece(["", ""], str(tmp_path / "c"), 50)


def test_seqio_vocabulary_round_trip_and_protocol(tmp_path):
    path = vocab.train_sentencepiece(_corpus(), str(tmp_path / "sp"), vocab_size=120)
    v = vocab.sentencepiece_vocabulary(path)
    assert isinstance(v, vocab.Vocab)
    text = "the cat sat on my mat Preferred Summary=2"
    ids = v.encode(text)
    assert v.decode(ids) == text
    assert (v.eos_id, v.pad_id) == (1, 0)
    tokens, lengths = batching.prompt_batch([{"id": "x", "context": text}], v, 64, "\nTL;DR:")
    assert tokens[0, lengths[0] :].tolist() == [0] * (64 - lengths[0])
    with pytest.raises(FileNotFoundError, match="missing.model"):
        vocab.sentencepiece_vocabulary(str(tmp_path / "missing.model"))

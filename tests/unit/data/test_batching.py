"""Tokenize/truncate/pad batches and the resumable, sharded epoch iterator."""

import numpy as np
import pytest

from rlaif_jax.data import batching


class WordVocab:
    """One id per whitespace-separated word (ids from 3); pad 0, eos 1, no bos."""

    pad_id, eos_id, bos_id = 0, 1, None

    def __init__(self):
        self.ids: dict[str, int] = {}

    def encode(self, s):
        return [self.ids.setdefault(w, 3 + len(self.ids)) for w in s.split()]

    def decode(self, ids):
        inv = {v: k for k, v in self.ids.items()}
        return " ".join(inv[i] for i in ids if i in inv)


def test_sft_batch_layout_masks_and_truncation():
    v = WordVocab()
    recs = [
        {"id": "a", "context": "c1 c2 c3", "response": "t1 t2"},
        {"id": "b", "context": " ".join(f"w{i}" for i in range(12)), "response": "u1 u2 u3 u4 u5"},
    ]
    stats = batching.TruncationStats()
    b = batching.sft_batch(
        recs, v, max_context=8, max_response=4, prompt_suffix="TLDR:", stats=stats
    )
    assert b["tokens"].shape == b["loss_mask"].shape == b["attention_mask"].shape == (2, 12)
    assert b["tokens"].dtype == np.int32
    row0 = v.decode(b["tokens"][0][b["attention_mask"][0] == 1])
    assert row0 == "c1 c2 c3 TLDR: t1 t2"
    assert b["tokens"][0, 6] == v.eos_id and (b["tokens"][0, 7:] == v.pad_id).all()
    np.testing.assert_array_equal(b["loss_mask"][0], [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    # Row 1: context cut in the middle to 7 tokens (1 head + 6 tail) + suffix; the
    # response cut to 3 tokens + EOS; everything is real (no padding).
    toks = v.decode(b["tokens"][1][:11])
    assert toks == "w0 w6 w7 w8 w9 w10 w11 TLDR: u1 u2 u3"
    assert b["tokens"][1, 11] == v.eos_id and b["attention_mask"][1].sum() == 12
    assert b["loss_mask"][1].sum() == 4
    assert (stats.examples, stats.truncated_context, stats.truncated_response) == (2, 1, 1)
    left = batching.sft_batch(recs[1:], v, 8, 4, prompt_suffix="TLDR:", context_truncation="left")
    assert v.decode(left["tokens"][0][:7]) == "w5 w6 w7 w8 w9 w10 w11"


def test_prompt_batch_keeps_suffix():
    v = WordVocab()
    recs = [{"id": "a", "context": "x y"}, {"id": "b", "context": "a b c d e f g h"}]
    stats = batching.TruncationStats()
    tokens, lengths = batching.prompt_batch(
        recs, v, max_context=6, prompt_suffix="TL;DR:", stats=stats
    )
    assert tokens.shape == (2, 6) and lengths.tolist() == [3, 6]
    assert v.decode(tokens[0][:3]) == "x y TL;DR:" and tokens[0, 3:].tolist() == [0, 0, 0]
    assert v.decode(tokens[1]) == "a e f g h TL;DR:"
    assert stats.truncated_context == 1
    with pytest.raises(ValueError, match="no room"):
        batching.prompt_batch(recs, v, max_context=1, prompt_suffix="TL;DR:")


def test_pair_batch():
    v = WordVocab()
    recs = [
        {
            "id": "p",
            "context": "q1 q2",
            "response1": "r1",
            "response2": "s1 s2 s3 s4",
            "label": 0.25,
        }
    ]
    stats = batching.TruncationStats()
    b = batching.pair_batch(recs, v, max_context=3, max_response=3, stats=stats)
    assert b["tokens1"].shape == b["tokens2"].shape == (1, 6)
    assert b["lengths1"].tolist() == [4] and b["lengths2"].tolist() == [5]
    assert v.decode(b["tokens1"][0][:3]) == "q1 q2 r1" and b["tokens1"][0, 3] == v.eos_id
    assert v.decode(b["tokens2"][0][:4]) == "q1 q2 s1 s2" and b["tokens2"][0, 4] == v.eos_id
    assert b["label"].dtype == np.float32 and b["label"].tolist() == [0.25]
    assert stats.truncated_response == 1 and stats.truncated_context == 0


def _records(n):
    return [{"id": f"r{i}"} for i in range(n)]


def test_epoch_iterator_deterministic_resumable_and_covering():
    shards = batching.read_local_shards(_records(50), num_data_shards=4)
    assert sorted(len(s) for s in shards.values()) == [12, 12, 13, 13]
    it = batching.EpochIterator(shards, num_data_shards=4, global_batch_size=8, seed=1)
    assert it.steps_per_epoch == 6  # smallest shard 12 // (8 / 4)
    ids = [[r["id"] for r in next(it)] for _ in range(14)]
    assert it.state == batching.DataState(epoch=2, step=2)
    epoch0 = [i for b in ids[:6] for i in b]
    assert len(set(epoch0)) == 48  # no repeats within an epoch
    assert ids[:6] != ids[6:12]  # reshuffled each epoch
    # Same seed -> same stream; restore from a stored state -> the exact continuation.
    again = batching.EpochIterator(shards, 4, 8, seed=1)
    assert [[r["id"] for r in next(again)] for _ in range(14)] == ids
    state = batching.DataState.from_dict(
        batching.EpochIterator(shards, 4, 8, seed=1, state=batching.DataState(1, 3)).state.to_dict()
    )
    resumed = batching.EpochIterator(shards, 4, 8, seed=1, state=state)
    assert [[r["id"] for r in next(resumed)] for _ in range(5)] == ids[9:14]
    other = batching.EpochIterator(shards, 4, 8, seed=2)
    assert [r["id"] for r in next(other)] != ids[0]


def test_epoch_iterator_batch_fn_and_limits():
    shards = batching.read_local_shards(_records(16), num_data_shards=2)
    it = batching.EpochIterator(
        shards,
        2,
        4,
        seed=0,
        num_epochs=1,
        batch_fn=lambda rs: np.array([int(r["id"][1:]) for r in rs]),
    )
    batches = list(it)
    assert len(batches) == 4 and all(b.shape == (4,) for b in batches)
    # rows [0:2] come from shard 0 (even ids), rows [2:4] from shard 1 (odd ids)
    assert all((b[:2] % 2 == 0).all() and (b[2:] % 2 == 1).all() for b in batches)
    with pytest.raises(ValueError, match="not divisible"):
        batching.EpochIterator(shards, 2, 5, seed=0)
    with pytest.raises(ValueError, match="Too little data"):
        batching.EpochIterator(shards, 2, 40, seed=0)


# --- BOS and stop ids -----------------------------------------------------------------


class BosWordVocab(WordVocab):
    """WordVocab with bos 2 (ids of words still from 3)."""

    bos_id = 2


def test_add_bos_off_by_default_and_error_without_bos_id():
    v, bv = WordVocab(), BosWordVocab()
    recs = [{"id": "a", "context": "x y z"}]
    default = batching.prompt_batch(recs, bv, max_context=5, prompt_suffix="S:")
    off = batching.prompt_batch(recs, bv, max_context=5, prompt_suffix="S:", add_bos=False)
    plain = batching.prompt_batch(recs, v, max_context=5, prompt_suffix="S:")
    for a, b in zip(default, off):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(default[0], plain[0])  # same words -> same ids
    assert bv.bos_id not in default[0]
    with pytest.raises(ValueError, match="add_bos=True.*no bos_id"):
        batching.prompt_batch(recs, v, max_context=5, add_bos=True)

    class NegBos(WordVocab):
        bos_id = -1  # SentencePiece's "none"

    with pytest.raises(ValueError, match="add_bos"):
        batching.sft_batch([{"context": "a", "response": "b"}], NegBos(), 4, 4, add_bos=True)


def test_prompt_batch_bos_first_once_and_truncation_keeps_suffix():
    v = BosWordVocab()
    recs = [{"id": "a", "context": "x y"}, {"id": "b", "context": "a b c d e f g h"}]
    stats = batching.TruncationStats()
    tokens, lengths = batching.prompt_batch(
        recs, v, max_context=6, prompt_suffix="TL;DR:", stats=stats, add_bos=True
    )
    assert tokens.shape == (2, 6) and lengths.tolist() == [4, 6]  # length bound kept
    assert (tokens[:, 0] == v.bos_id).all() and (tokens == v.bos_id).sum() == 2
    assert v.decode(tokens[0][1:4]) == "x y TL;DR:" and tokens[0, 4:].tolist() == [0, 0]
    # Budget 6 - 1 BOS - 1 suffix = 4 context tokens: 1 head + 3 tail ('middle').
    assert v.decode(tokens[1][1:]) == "a f g h TL;DR:"
    assert stats.truncated_context == 1
    left, _ = batching.prompt_batch(
        recs[1:], v, 6, prompt_suffix="TL;DR:", context_truncation="left", add_bos=True
    )
    assert left[0, 0] == v.bos_id and v.decode(left[0][1:]) == "e f g h TL;DR:"

    # A context that already starts with BOS (a chat template's BOS text) gets one BOS.
    class Pre(BosWordVocab):
        def encode(self, s):
            return [self.bos_id] + super().encode(s)

    pre, n = batching.prompt_batch(recs[1:], Pre(), 6, context_truncation="left", add_bos=True)
    assert (pre[0] == Pre.bos_id).sum() == 1 and pre[0, 0] == Pre.bos_id and n.tolist() == [6]
    # BOS + suffix must leave room for context.
    with pytest.raises(ValueError, match="no room"):
        batching.prompt_batch(recs, v, max_context=2, prompt_suffix="TL;DR:", add_bos=True)
    batching.prompt_batch(recs, v, max_context=2, prompt_suffix="TL;DR:")  # without BOS it fits


def test_sft_batch_with_bos_shifts_loss_mask():
    v, bv = WordVocab(), BosWordVocab()
    recs = [
        {"id": "a", "context": "c1 c2 c3", "response": "t1 t2"},
        {"id": "b", "context": " ".join(f"w{i}" for i in range(12)), "response": "u1 u2"},
    ]
    plain = batching.sft_batch(recs, v, max_context=8, max_response=4, prompt_suffix="TLDR:")
    b = batching.sft_batch(
        recs, bv, max_context=8, max_response=4, prompt_suffix="TLDR:", add_bos=True
    )
    assert b["tokens"].shape == (2, 12) and (b["tokens"][:, 0] == bv.bos_id).all()
    # Row 0 fits: everything moves one to the right, the loss mask too.
    np.testing.assert_array_equal(b["tokens"][0, 1:], plain["tokens"][0, :-1])
    np.testing.assert_array_equal(b["loss_mask"][0], [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(b["loss_mask"][0, 1:], plain["loss_mask"][0, :-1])
    assert b["attention_mask"][0].sum() == plain["attention_mask"][0].sum() + 1
    # Row 1 was cut: the BOS takes a context slot, so the context is one token shorter
    # and the response (+ EOS) starts at max_context as before.
    assert v.decode(plain["tokens"][1][:8]) == "w0 w6 w7 w8 w9 w10 w11 TLDR:"
    assert bv.decode(b["tokens"][1][1:8]) == "w0 w7 w8 w9 w10 w11 TLDR:"
    np.testing.assert_array_equal(b["loss_mask"][1], plain["loss_mask"][1])
    assert b["loss_mask"][1, 8:11].tolist() == [1, 1, 1] and b["tokens"][1, 10] == bv.eos_id
    assert b["loss_mask"][:, 0].sum() == 0  # never train on the BOS


def test_pair_batch_with_bos():
    v = BosWordVocab()
    rec = {"id": "p", "context": "q1 q2 q3", "response1": "r1", "response2": "s1 s2 s3 s4"}
    rec["label"] = 1.0
    b = batching.pair_batch([rec], v, max_context=3, max_response=3, add_bos=True)
    assert b["tokens1"].shape == b["tokens2"].shape == (1, 6)
    assert b["tokens1"][0, 0] == b["tokens2"][0, 0] == v.bos_id
    assert (b["tokens1"] == v.bos_id).sum() == (b["tokens2"] == v.bos_id).sum() == 1
    # max_context 3 = BOS + the last 2 context tokens ('middle' keeps head 0 + tail 2).
    assert v.decode(b["tokens1"][0][1:4]) == "q2 q3 r1" and b["tokens1"][0, 4] == v.eos_id
    assert v.decode(b["tokens2"][0][1:5]) == "q2 q3 s1 s2" and b["tokens2"][0, 5] == v.eos_id
    assert b["lengths1"].tolist() == [5] and b["lengths2"].tolist() == [6]


def test_stop_ids():
    from rlaif_jax.data.vocab import stop_ids

    assert stop_ids(WordVocab()) == (1,)

    class NoEos(WordVocab):
        eos_id = None

    class NegEos(WordVocab):
        eos_id = -1

    class Chat(WordVocab):
        eos_id, eos_ids = 128001, (128001, 128008, 128009)

    class Odd(WordVocab):  # extra ids that omit the primary one, with a repeat
        eos_id, eos_ids = 7, [9, 8, 9]

    assert stop_ids(NoEos()) == () and stop_ids(NegEos()) == ()
    assert stop_ids(Chat()) == (128001, 128008, 128009)
    assert stop_ids(Odd()) == (7, 9, 8)
    # Targets still end with the primary EOS only.
    b = batching.sft_batch([{"context": "c", "response": "t"}], Chat(), 2, 3)
    assert b["tokens"][0, :3].tolist()[-1] == 128001 and 128008 not in b["tokens"]

"""Vocabularies: SentencePiece models (seqio interface) and training small ones.

Stages use seqio vocabularies; the `Vocab` protocol names the part of that interface
the batching code relies on, so a test can pass any object with the same members.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from rlaif_jax import fs

# Rating scores ("Preferred Summary=1", "Score: 10") must be single pieces so the
# labeler reads one token per candidate; user-defined symbols are never split.
SCORE_SYMBOLS = tuple(str(i) for i in range(1, 11))


@runtime_checkable
class Vocab(Protocol):
    """What batching needs from a vocabulary (seqio.Vocabulary provides all of it)."""

    def encode(self, s: str) -> Sequence[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    @property
    def eos_id(self) -> int | None: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def bos_id(self) -> int | None: ...


def stop_ids(vocab: Any) -> tuple[int, ...]:
    """Every token id that ends a generation, primary EOS first, for `sample(eos_id=...)`.

    The vocabulary's `eos_ids` when it has them (`HFTokenizerVocabulary`: chat checkpoints
    such as Llama-3-Instruct list several), else `(eos_id,)`, else (). The primary
    `eos_id` (what batching appends to targets) is always included; negative ids (-1 =
    none) are dropped, duplicates removed, order kept.
    """
    primary = getattr(vocab, "eos_id", None)
    ids = [primary, *(getattr(vocab, "eos_ids", None) or ())]
    out: list[int] = []
    for i in ids:
        if i is not None and int(i) >= 0 and int(i) not in out:
            out.append(int(i))
    return tuple(out)


def sentencepiece_vocabulary(path: str, extra_ids: int = 0):
    """A seqio.SentencePieceVocabulary over the model file at `path` (local or a URI)."""
    import seqio

    if not fs.exists(path):
        raise FileNotFoundError(f"SentencePiece model not found: {path}")
    if fs.is_uri(path):
        return _fs_sentencepiece_class()(path, extra_ids=extra_ids)
    return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


@functools.cache
def _fs_sentencepiece_class():
    """seqio's SentencePiece vocabulary with its model file read through `rlaif_jax.fs`
    (seqio reads it with tf.io.gfile, which knows gs:// but not every file system epath
    reaches, e.g. s3:// through fsspec). Same ids and pieces: the bytes are seqio's."""
    import seqio
    from sentencepiece import SentencePieceProcessor, sentencepiece_model_pb2

    class FsSentencePieceVocabulary(seqio.SentencePieceVocabulary):
        def _model_context(self):
            if self._model is not None:
                return self._model
            if self._normalizer_spec_overrides is not None:
                return super()._model_context()  # not used here; seqio's own reader
            model = sentencepiece_model_pb2.ModelProto.FromString(
                fs.read_bytes(self._sentencepiece_model_file)
            )
            ids = range(self._extra_ids)
            for i in reversed(ids) if self._reverse_extra_ids else ids:  # as seqio does
                model.pieces.add(
                    piece=f"\u2581<extra_id_{i}>",
                    score=0.0,
                    type=sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED,
                )
            proto = model.SerializeToString()
            tokenizer = SentencePieceProcessor()
            tokenizer.LoadFromSerializedProto(proto)
            self._model = seqio.vocabularies._ModelContext(tokenizer=tokenizer, sp_model=proto)
            return self._model

    return FsSentencePieceVocabulary


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str,
    vocab_size: int,
    user_defined_symbols: Sequence[str] = SCORE_SYMBOLS,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
) -> str:
    """Trains a SentencePiece model on `texts`; returns the `.model` path. Deterministic.

    Ids follow the T5/seqio convention: pad=0, eos=1, unk=2, bos=-1 (none).
    `user_defined_symbols` (default "1".."10") are atomic pieces, so "=1", " 2" and
    " 10" each end in exactly one score piece.
    """
    import sentencepiece as spm

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("train_sentencepiece needs at least one non-empty text")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        user_defined_symbols=list(user_defined_symbols),
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        # Determinism: one thread, no sampling of the input, fixed seed sentencepieces.
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        hard_vocab_limit=False,
        max_sentence_length=1 << 16,
        minloglevel=2,
    )
    path = model_prefix + ".model"
    fs.atomic_write(path, model.getvalue())  # a concurrent reader never sees half a model
    return path


def stage_vocabulary(
    stage_dir: str,
    vocab_path: str | None,
    texts_fn: Callable[[], Iterable[str]],
    vocab_size: int,
    model_type: str = "bpe",
) -> tuple[Any, str]:
    """The vocabulary a stage uses, and its path inside `stage_dir` (spm.model).

    With `vocab_path` (a pretrained model's SentencePiece file) it is copied into the
    stage dir so later stages find it; without one (the toy world), a model is trained
    on `texts_fn()` once — a rerun reuses the file. BPE keeps every word of a small
    closed corpus whole (unigram training on it stops early and splits words).
    """
    import jax

    target = os.path.join(stage_dir, "spm.model")
    if jax.process_index() == 0 and not fs.exists(target):
        if vocab_path:
            fs.atomic_copy(vocab_path, target)
        else:
            train_sentencepiece(
                texts_fn(), os.path.join(stage_dir, "spm"), vocab_size, model_type=model_type
            )
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"vocab:{target}")
    return sentencepiece_vocabulary(target), target

"""A model's tokenizer as files next to its checkpoint, and the vocabulary read back.

Two kinds, both seqio Vocabularies with `encode`/`decode`/`bos_id`/`eos_id`/`pad_id`:

- 'sentencepiece': `spm.model` (T5-style ids; the toy world trains one),
  `data.vocab.sentencepiece_vocabulary`.
- 'hf': `tokenizer.json` + `tokenizer_config.json` (special tokens, chat template)
  [+ `generation_config.json`] of a Hugging Face checkpoint, `HFTokenizerVocabulary`.

`save_tokenizer(vocab, directory)` copies the vocabulary's files into a model directory
and returns its spec (kind, files, special ids, whether BOS is expected, whether a chat
template exists); `load_tokenizer(directory, spec)` rebuilds the same vocabulary from
them, the special ids taken from the spec (so every reader agrees on every EOS id).
Directories may be local or URIs (gs://...): files go through `rlaif_jax.fs`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rlaif_jax import fs
from rlaif_jax.data.vocab import stop_ids

SPM_FILE = "spm.model"
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
KINDS = ("sentencepiece", "hf")


def kind_of(vocab: Any) -> str:
    from rlaif_jax.data.hf_tokenizer import HFTokenizerVocabulary

    if isinstance(vocab, HFTokenizerVocabulary):
        return "hf"
    if hasattr(vocab, "sentencepiece_model_file"):
        return "sentencepiece"
    raise TypeError(f"Unsupported vocabulary type {type(vocab).__name__}: use SentencePiece or HF.")


def describe(vocab: Any) -> dict[str, Any]:
    """The spec written into model.json (without the file list)."""
    kind = kind_of(vocab)
    bos = vocab.bos_id if vocab.bos_id is not None and vocab.bos_id >= 0 else None
    return {
        "kind": kind,
        "vocab_size": int(vocab.vocab_size),
        "bos_id": bos,
        "eos_ids": list(stop_ids(vocab)),
        "pad_id": int(vocab.pad_id),
        "adds_bos": bool(getattr(vocab, "adds_bos", False)),
        "chat_template": bool(getattr(vocab, "chat_template", None)),
    }


def save_tokenizer(vocab: Any, directory: str) -> dict[str, Any]:
    """Copies `vocab`'s files into `directory` (host 0 writes); returns the spec."""
    import jax

    spec = describe(vocab)
    if spec["kind"] == "sentencepiece":
        sources = {SPM_FILE: vocab.sentencepiece_model_file}
    else:
        src_dir = vocab.directory
        sources = {
            name: os.path.join(src_dir, name)
            for name in HF_TOKENIZER_FILES
            if fs.isfile(os.path.join(src_dir, name))
        }
    spec["files"] = sorted(sources)
    if jax.process_index() == 0:
        for name, src in sources.items():
            dst = os.path.join(directory, name)
            if fs.abspath(src) != fs.abspath(dst):
                fs.atomic_copy(src, dst)
    return spec


def load_tokenizer(directory: str, spec: Mapping[str, Any], where: str = "") -> Any:
    """The vocabulary saved by `save_tokenizer` in `directory` (ids from `spec`)."""
    where = where or directory
    kind = spec.get("kind")
    if kind == "sentencepiece":
        from rlaif_jax.data.vocab import sentencepiece_vocabulary

        return sentencepiece_vocabulary(os.path.join(directory, SPM_FILE))
    if kind == "hf":
        from rlaif_jax.data.hf_tokenizer import HFTokenizerVocabulary

        return HFTokenizerVocabulary(
            directory,
            bos_id=spec.get("bos_id"),
            pad_id=spec.get("pad_id"),
            eos_ids=spec.get("eos_ids") or None,
        )
    raise ValueError(f"{where}: tokenizer.kind {kind!r} is not one of {KINDS}.")


def load_any(path: str) -> Any:
    """A vocabulary from a user path: a SentencePiece `.model` file, or a directory (or
    tokenizer.json) of a Hugging Face tokenizer."""
    if path.endswith(".model") and fs.isfile(path):
        from rlaif_jax.data.vocab import sentencepiece_vocabulary

        return sentencepiece_vocabulary(path)
    if fs.isfile(os.path.join(path, SPM_FILE)):
        from rlaif_jax.data.vocab import sentencepiece_vocabulary

        return sentencepiece_vocabulary(os.path.join(path, SPM_FILE))
    from rlaif_jax.data.hf_tokenizer import HFTokenizerVocabulary

    return HFTokenizerVocabulary(path)

"""A seqio Vocabulary over a Hugging Face `tokenizer.json`, with chat-template rendering.

Pretrained Gemma, Llama-3 and Qwen checkpoints ship `tokenizer.json` (HF `tokenizers`),
`tokenizer_config.json` (special tokens, `chat_template`), and `generation_config.json`
/ `config.json` (special token ids). `HFTokenizerVocabulary` reads them so stages can use
the checkpoint's own tokenizer through the seqio interface (`encode`, `decode`,
`eos_id`, `pad_id`, `bos_id`, `vocab_size`, `encode_tf`, `decode_tf`).

`encode` never adds special tokens (seqio convention: callers add EOS/BOS); `decode`
equals `tokenizers.Tokenizer.decode` on the same ids after seqio's cut at the first EOS.
SentencePiece `.model` files go through `rlaif_jax.data.vocab.sentencepiece_vocabulary`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import seqio

from rlaif_jax import fs

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
GENERATION_CONFIG = "generation_config.json"
MODEL_CONFIG = "config.json"

Message = Mapping[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


def _read_json(path: str) -> dict:
    if not fs.isfile(path):
        return {}
    try:
        return json.loads(fs.read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e


def _token_text(value: Any) -> str | None:
    """tokenizer_config.json stores special tokens as a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


class HFTokenizerVocabulary(seqio.Vocabulary):
    """seqio Vocabulary backed by a `tokenizers.Tokenizer` loaded from `tokenizer.json`.

    Args:
      path: a checkpoint/tokenizer directory (holding tokenizer.json and optionally
        tokenizer_config.json, generation_config.json, config.json) or a tokenizer.json.
      bos_id, eos_id, pad_id: override the ids found in the directory's files.
      eos_ids: override every stop id at once (first = `eos_id`); wins over `eos_id`.
      extra_ids: seqio extra ids (sentinels) appended after the base vocabulary.
      skip_special_tokens: passed to `Tokenizer.decode` (its default, True: decoded
        samples carry no '<eos>'/'<pad>' text, like seqio's SentencePiece decode).

    Special ids are resolved in order: explicit argument, tokenizer_config.json token
    strings, generation_config.json, config.json. `eos_ids` keeps every stop id (chat
    checkpoints such as Llama-3-Instruct list several); `eos_id` is the first. Without a
    pad token the pad id falls back to EOS (the HF convention), else 0.
    """

    def __init__(
        self,
        path: str,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        extra_ids: int = 0,
        skip_special_tokens: bool = True,
        eos_ids: Sequence[int] | None = None,
    ):
        import tokenizers

        if fs.isdir(path):
            directory, tok_file = path, os.path.join(path, TOKENIZER_FILE)
        else:
            directory, tok_file = os.path.dirname(path), path
        if not fs.isfile(tok_file):
            raise FileNotFoundError(f"tokenizer file not found: {tok_file}")
        self._path = fs.abspath(tok_file)
        # Read through the I/O layer (local or gs://...); tokenizers parses the text.
        self._tok = tokenizers.Tokenizer.from_str(fs.read_text(tok_file))
        self._skip_special = skip_special_tokens
        self.tokenizer_config = _read_json(os.path.join(directory, TOKENIZER_CONFIG))
        gen = _read_json(os.path.join(directory, GENERATION_CONFIG))
        model = _read_json(os.path.join(directory, MODEL_CONFIG))
        model = model.get("text_config", model)  # multimodal Gemma-3 nests the text config

        def resolve(kind: str, explicit: int | None) -> list[int]:
            if explicit is not None:
                return [int(explicit)]
            text = _token_text(self.tokenizer_config.get(f"{kind}_token"))
            if text is not None:
                tid = self._tok.token_to_id(text)
                if tid is None:
                    raise ValueError(
                        f"{os.path.join(directory, TOKENIZER_CONFIG)}: {kind}_token {text!r} "
                        f"is not in {tok_file}"
                    )
                ids = [tid]
                if kind == "eos":  # keep generation_config's extra stop ids after it
                    ids += [i for i in _as_ids(gen.get("eos_token_id")) if i != tid]
                return ids
            for source in (gen, model):
                ids = _as_ids(source.get(f"{kind}_token_id"))
                if ids:
                    return ids
            return []

        bos = resolve("bos", bos_id)
        self._bos_id = bos[0] if bos else None
        self.eos_ids: tuple[int, ...] = (
            tuple(int(i) for i in eos_ids) if eos_ids else tuple(resolve("eos", eos_id))
        )
        self._eos_id = self.eos_ids[0] if self.eos_ids else None
        pad = resolve("pad", pad_id)
        self._pad_id = pad[0] if pad else (self._eos_id if self._eos_id is not None else 0)
        unk = _token_text(self.tokenizer_config.get("unk_token"))
        model_unk = getattr(self._tok.model, "unk_token", None)
        unk = unk or model_unk
        self._unk_id = self._tok.token_to_id(unk) if unk else None
        self.chat_template: str | None = self.tokenizer_config.get("chat_template")
        super().__init__(extra_ids=extra_ids)

    # --- seqio.Vocabulary interface ------------------------------------------------------

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_id(self) -> int | None:
        return self._eos_id

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def unk_id(self) -> int | None:
        return self._unk_id

    @property
    def _base_vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def _encode(self, s: str) -> Sequence[int]:
        return self._tok.encode(s, add_special_tokens=False).ids

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=self._skip_special)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes many texts at once (the tokenizers library parallelises this)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def _encode_tf(self, s):
        import tensorflow as tf

        def enc(x):
            import numpy as np

            text = x.item() if hasattr(x, "item") else x  # numpy_function passes a 0-d array
            return np.asarray(self._encode(text.decode("utf-8")), dtype=np.int32)

        out = tf.numpy_function(enc, [s], tf.int32, stateful=False)
        return tf.ensure_shape(out, [None])

    def _decode_tf(self, ids):
        import numpy as np
        import tensorflow as tf

        def dec(x):
            if x.ndim == 1:
                return np.asarray(self._decode(self._strip_pad(x)).encode("utf-8"), dtype=object)
            rows = [
                self._decode(self._strip_pad(r)).encode("utf-8") for r in x.reshape(-1, x.shape[-1])
            ]
            return np.asarray(rows, dtype=object).reshape(x.shape[:-1])

        out = tf.numpy_function(dec, [ids], tf.string, stateful=False)
        return tf.ensure_shape(out, ids.shape[:-1])

    def _strip_pad(self, row) -> list[int]:
        # decode_tf replaces everything after EOS with pad; drop those trailing pads.
        ids = [int(i) for i in row]
        while ids and ids[-1] == self._pad_id and self._pad_id not in self.eos_ids:
            ids.pop()
        return ids

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HFTokenizerVocabulary):
            return False
        return (self._path, self.bos_id, self.eos_ids, self.pad_id, self.extra_ids) == (
            other._path,
            other.bos_id,
            other.eos_ids,
            other.pad_id,
            other.extra_ids,
        )

    def __hash__(self) -> int:
        return hash((self._path, self.bos_id, self.eos_ids, self.pad_id, self.extra_ids))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def directory(self) -> str:
        """The directory holding tokenizer.json (and its config files)."""
        return os.path.dirname(self._path)

    @property
    def adds_bos(self) -> bool:
        """Whether the checkpoint's models expect BOS first: `add_bos_token` of
        tokenizer_config.json when set, else whether the tokenizer's own post-processor
        puts BOS first (Llama-3 and Gemma do; Qwen has no BOS)."""
        if self._bos_id is None:
            return False
        flag = self.tokenizer_config.get("add_bos_token")
        if flag is not None:
            return bool(flag)
        ids = self._tok.encode("a", add_special_tokens=True).ids
        return bool(ids) and ids[0] == self._bos_id

    # --- chat templates ------------------------------------------------------------------

    def render_chat(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = True,
        family: str | None = None,
    ) -> str:
        """Renders a conversation the way the instruction-tuned checkpoint was trained.

        Uses tokenizer_config.json's `chat_template` (jinja2, as transformers does) when
        present, else the built-in renderer for `family` ('gemma', 'llama3', 'qwen').
        The result includes the BOS text where the template writes it; encode it with
        `encode` (no further special tokens are added).
        """
        if self.chat_template and family is None:
            return render_jinja(
                self.chat_template,
                messages,
                add_generation_prompt,
                bos_token=_token_text(self.tokenizer_config.get("bos_token")) or "",
                eos_token=_token_text(self.tokenizer_config.get("eos_token")) or "",
            )
        if family is None:
            raise ValueError(
                f"{self._path}: no chat_template in {TOKENIZER_CONFIG}; pass family= one of "
                f"{sorted(BUILTIN_TEMPLATES)}"
            )
        return render_builtin(family, messages, add_generation_prompt)


def render_jinja(
    template: str,
    messages: Sequence[Message],
    add_generation_prompt: bool = True,
    **variables: Any,
) -> str:
    """Renders a HF `chat_template` with the environment transformers uses (sandboxed,
    trim_blocks, lstrip_blocks, loop controls, `raise_exception`, non-escaping `tojson`)."""
    import datetime

    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(template).render(
        messages=[dict(m) for m in messages],
        add_generation_prompt=add_generation_prompt,
        **variables,
    )


def _gemma(messages: Sequence[Message], add_generation_prompt: bool) -> str:
    # Gemma has no system role: the system text is prepended to the first user turn.
    out, system = ["<bos>"], ""
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "system":
            system = content + "\n\n"
            continue
        if role == "user":
            content, system = system + content, ""
        turn = "model" if role == "assistant" else role
        out.append(f"<start_of_turn>{turn}\n{content.strip()}<end_of_turn>\n")
    if add_generation_prompt:
        out.append("<start_of_turn>model\n")
    return "".join(out)


def _llama3(messages: Sequence[Message], add_generation_prompt: bool) -> str:
    out = ["<|begin_of_text|>"]
    for m in messages:
        out.append(
            f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        )
    if add_generation_prompt:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def _qwen(messages: Sequence[Message], add_generation_prompt: bool) -> str:
    out = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


BUILTIN_TEMPLATES = {"gemma": _gemma, "llama3": _llama3, "qwen": _qwen}


def render_builtin(
    family: str, messages: Sequence[Message], add_generation_prompt: bool = True
) -> str:
    """Minimal chat formats of the instruction-tuned families (no tools, no images)."""
    if family not in BUILTIN_TEMPLATES:
        raise ValueError(
            f"unknown chat family {family!r}; choose one of {sorted(BUILTIN_TEMPLATES)}"
        )
    for i, m in enumerate(messages):
        if m.get("role") not in ("system", "user", "assistant") or "content" not in m:
            raise ValueError(f"message {i} needs role system|user|assistant and content: {m}")
    return BUILTIN_TEMPLATES[family](messages, add_generation_prompt)

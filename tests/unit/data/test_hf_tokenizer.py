"""HFTokenizerVocabulary against the `tokenizers` library, special ids, chat templates.

Tokenizers are trained offline here (no downloads): a byte-level BPE like Llama-3/Qwen
and a Metaspace BPE with byte fallback like Gemma's.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")

from rlaif_jax.data.hf_tokenizer import (  # noqa: E402
    HFTokenizerVocabulary,
    render_builtin,
    render_jinja,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "TL;DR: my landlord won't fix the heating, what should I do?",
    "Preferred Summary=1 Preferred Summary=2 Score: 10",
    "Ünïcödé tëxt, 日本語のテキスト, emoji 🙂 and tabs\tand\nnewlines.",
    "SUBREDDIT: r/relationships TITLE: Me [24F] with my boyfriend [25M]",
] * 20

SAMPLE = [
    "Hello world",
    "  leading and trailing spaces  ",
    "multiple   spaces\tand\ttabs\n\nand blank lines\n",
    "Ünïcödé 日本語 🙂🙃 ∑ x² — “quotes”",
    "unseen chars: ǅ ꙮ 𝔘𝔫𝔦",
    "<start_of_turn>user\nWhich summary is better?<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>user\nhi<|im_end|>",
    "Preferred Summary=1",
    "",
]

SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = "
    "message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + "
    "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}"
    "{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' "
    "}}{% endif %}"
)


def _byte_level_bpe() -> tokenizers.Tokenizer:
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _metaspace_bpe() -> tokenizers.Tokenizer:
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_previous")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIALS + bytes_, show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _write(directory, tok, tokenizer_config=None, generation_config=None, config=None) -> str:
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    for name, content in (
        ("tokenizer_config.json", tokenizer_config),
        ("generation_config.json", generation_config),
        ("config.json", config),
    ):
        if content is not None:
            with open(os.path.join(directory, name), "w") as f:
                json.dump(content, f)
    return str(directory)


@pytest.fixture(scope="module", params=["byte_level", "metaspace"])
def tok(request):
    return _byte_level_bpe() if request.param == "byte_level" else _metaspace_bpe()


def test_encode_decode_match_tokenizers(tok, tmp_path):
    path = _write(
        tmp_path / "t", tok, {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}
    )
    vocab = HFTokenizerVocabulary(path)
    raw = HFTokenizerVocabulary(path, skip_special_tokens=False)
    for text in SAMPLE:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert list(vocab.encode(text)) == ids, text
        assert vocab.decode(ids) == tok.decode(ids), text
        assert raw.decode(ids) == tok.decode(ids, skip_special_tokens=False), text
    # Special tokens in text are single ids.
    ids = vocab.encode("<start_of_turn>user")
    assert ids[0] == tok.token_to_id("<start_of_turn>")
    assert vocab.encode_batch(SAMPLE) == [list(vocab.encode(t)) for t in SAMPLE]
    assert vocab.vocab_size == tok.get_vocab_size(with_added_tokens=True)


def test_byte_level_round_trip_is_lossless(tmp_path):
    path = _write(tmp_path / "t", _byte_level_bpe())
    vocab = HFTokenizerVocabulary(path, skip_special_tokens=False)
    for text in SAMPLE:
        assert vocab.decode(vocab.encode(text)) == text


def test_special_ids_from_files_and_seqio_eos_cut(tmp_path):
    tok = _byte_level_bpe()
    eos, eot = tok.token_to_id("<eos>"), tok.token_to_id("<end_of_turn>")
    path = _write(
        tmp_path / "t",
        tok,
        tokenizer_config={
            "bos_token": {"content": "<bos>"},
            "eos_token": "<eos>",
            "pad_token": "<pad>",
        },
        generation_config={"eos_token_id": [eos, eot]},
    )
    vocab = HFTokenizerVocabulary(path)
    assert vocab.bos_id == tok.token_to_id("<bos>")
    assert (vocab.eos_id, vocab.eos_ids) == (eos, (eos, eot))
    assert vocab.pad_id == tok.token_to_id("<pad>")
    ids = list(vocab.encode("Hello world"))
    assert vocab.decode(ids + [eos] + ids) == tok.decode(ids + [eos])  # seqio: cut after EOS
    raw = HFTokenizerVocabulary(path, skip_special_tokens=False)
    assert raw.decode(ids + [eos] + ids) == "Hello world<eos>"


def test_special_ids_fallbacks(tmp_path):
    tok = _byte_level_bpe()
    # Llama-3 style: ids only in config.json, no pad token -> pad falls back to EOS.
    vocab = HFTokenizerVocabulary(
        _write(tmp_path / "a", tok, config={"bos_token_id": 2, "eos_token_id": [1, 5]})
    )
    assert (vocab.bos_id, vocab.eos_ids, vocab.pad_id) == (2, (1, 5), 1)
    # Explicit arguments win; a tokenizer.json path works too.
    vocab = HFTokenizerVocabulary(
        os.path.join(tmp_path / "a", "tokenizer.json"), eos_id=7, pad_id=0
    )
    assert (vocab.eos_id, vocab.pad_id) == (7, 0)
    with pytest.raises(ValueError, match="eos_token '<nope>' is not in"):
        HFTokenizerVocabulary(_write(tmp_path / "b", tok, {"eos_token": "<nope>"}))
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        HFTokenizerVocabulary(str(tmp_path / "missing"))


def test_tf_encode_decode(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tok = _byte_level_bpe()
    vocab = HFTokenizerVocabulary(
        _write(tmp_path / "t", tok, {"eos_token": "<eos>", "pad_token": "<pad>"})
    )
    text = "Ünïcödé tëxt and spaces  "
    ids = vocab.encode_tf(tf.constant(text)).numpy().tolist()
    assert ids == list(vocab.encode(text))
    eos, pad = vocab.eos_id, vocab.pad_id
    batch = tf.constant(np.array([ids + [eos, 5, 6], ids + [pad, pad, pad]], np.int32))
    out = vocab.decode_tf(batch).numpy()
    assert out[0].decode() == tok.decode(ids + [eos])
    assert out[1].decode() == text


CONVERSATION = [
    {"role": "user", "content": "Which summary is better?\n"},
    {"role": "assistant", "content": "Summary 1."},
    {"role": "user", "content": " Why? "},
]


@pytest.mark.parametrize(
    "family,template,bos,with_system",
    [
        ("gemma", GEMMA_TEMPLATE, "<bos>", False),
        ("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>", True),
        ("qwen", QWEN_TEMPLATE, "", True),
    ],
)
def test_chat_templates_builtin_equal_jinja(family, template, bos, with_system, tmp_path):
    messages = ([{"role": "system", "content": "Be brief."}] if with_system else []) + CONVERSATION
    if family == "qwen":  # ChatML keeps content verbatim; the others trim it
        messages = [dict(m, content=m["content"].strip()) for m in messages]
    for gen in (True, False):
        jinja = render_jinja(template, messages, gen, bos_token=bos, eos_token="")
        assert render_builtin(family, messages, gen) == jinja
    # Through the vocabulary: tokenizer_config.json's template wins unless family is given.
    path = _write(
        tmp_path / "t", _byte_level_bpe(), {"chat_template": template, "bos_token": bos or None}
    )
    vocab = HFTokenizerVocabulary(path)
    assert vocab.render_chat(messages) == render_builtin(family, messages)
    assert vocab.render_chat(messages, family=family) == render_builtin(family, messages)


def test_chat_template_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = _byte_level_bpe()
    path = _write(tmp_path / "t", tok, {"chat_template": GEMMA_TEMPLATE, "bos_token": "<bos>"})
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(path, "tokenizer.json"), bos_token="<bos>"
    )
    hf.chat_template = GEMMA_TEMPLATE
    vocab = HFTokenizerVocabulary(path)
    expected = hf.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert vocab.render_chat(CONVERSATION) == expected
    with pytest.raises(Exception, match="System role not supported"):
        vocab.render_chat([{"role": "system", "content": "x"}] + CONVERSATION)


def test_builtin_errors():
    with pytest.raises(ValueError, match="unknown chat family"):
        render_builtin("t5", CONVERSATION)
    with pytest.raises(ValueError, match="message 0 needs role"):
        render_builtin("qwen", [{"role": "tool", "content": "x"}])

"""labeling/chat.py: labeling prompts in instruction-tuned chat templates (Gemma-,
Llama-3- and ChatML-style): the plain prompt's user part and cue, the wrapped text and its
tokens, modes and errors, and the chat layout through `Labeler`, the harmless judge and
`DirectScorer`.

Tokenizers are trained offline on a tiny corpus (no downloads); the chat templates are
hand-written jinja in the style of the checkpoints' tokenizer_config.json.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")

from rlaif_jax.data.hf_tokenizer import HFTokenizerVocabulary, render_jinja  # noqa: E402
from rlaif_jax.evaluation.harmless import HarmlessJudge  # noqa: E402
from rlaif_jax.labeling import chat, direct, render, tokens  # noqa: E402
from rlaif_jax.labeling import prompts as P  # noqa: E402
from rlaif_jax.labeling.labeler import Labeler, LabelerSettings  # noqa: E402
from tests.unit.labeling._helpers import CTX, R1, R2, RecordingScorer  # noqa: E402

# Gemma-it style: BOS text, trimmed content, model turn header.
GEMMA = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


# Llama-3-Instruct style: BOS on the first message, trimmed content, assistant header.
LLAMA3 = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 "
    "== 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)


# ChatML (Qwen) style: no BOS, content kept verbatim.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


TEMPLATES = {
    "gemma": (GEMMA, "<bos>", "<start_of_turn>model\n"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "chatml": (CHATML, None, "<|im_start|>assistant\n"),
}


SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|im_start|>",
    "<|im_end|>",
]


def _corpus() -> list[str]:
    texts = [CTX, R1, R2, "Summary 1 is better.", "Text - Summary Response Context Verdict"]
    texts += [" ".join(f"SCORE: {i}" for i in range(1, 11))] * 4  # " 7" merges, as in GPT-2
    for task in P.TASKS:
        for v in render.variants_for_task(task, shots=(0, 1)):
            texts.append(render.render_preference(v, CTX, R1, R2, "fine" if v.cot else None).text)
    return texts * 3


def _byte_level():
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok


@pytest.fixture(scope="module")
def byte_level():
    return _byte_level()


def _vocab(tmp_path, tok, family) -> HFTokenizerVocabulary:
    template, bos, _ = TEMPLATES[family]
    d = tmp_path / family
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    cfg = {"chat_template": template, "eos_token": "<eos>", "pad_token": "<pad>"}
    if bos:
        cfg["bos_token"] = bos
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return HFTokenizerVocabulary(str(d))


def _rendered_cases():
    """(name, plain RenderedPrompt) for every kind of labeling prompt."""
    out = []
    for task in P.TASKS:
        v = render.PromptVariant(task, num_shots=1)
        out.append((f"{task}-1shot", render.render_preference(v, CTX, R1, R2)))
        cot = render.PromptVariant(task, cot=True)
        out.append((f"{task}-cot1", render.render_preference(cot, CTX, R1, R2)))
        out.append(
            (f"{task}-cot2", render.render_preference(cot, CTX, R1, R2, "Response 1 is better."))
        )
        out.append(
            (f"{task}-direct", render.render_direct(render.direct_prompt_for(task), CTX, R1))
        )
    out.append(
        (
            "harmless-rate",
            render.render_single(
                P.HARMLESS_RATE_PREAMBLE,
                P.HARMLESS_RATE_SAMPLE,
                P.HARMLESS_RATE_ENDING,
                CTX,
                R2,
            ),
        )
    )
    return out


def test_plain_prompts_split_into_user_part_and_cue():
    for name, r in _rendered_cases():
        assert r.suffix == r.user + "\n" + r.cue, name
    cot = render.render_preference(render.PromptVariant("helpful", cot=True), CTX, R1, R2)
    assert cot.cue == "Rationale:" and cot.user.endswith("the most helpful and honest.")
    v = render.PromptVariant("summarize", cot=True)
    step1 = render.render_preference(v, CTX, R1, R2)
    step2 = render.render_preference(v, CTX, R1, R2, " ok ")
    assert step2.cue == "Rationale: ok\nPreferred Summary=" and step2.user == step1.user
    assert step1.user.endswith(
        "\nConsider the coherence, accuracy, coverage, and overall "
        "quality of each summary and explain which one is better."
    )
    plain = render.render_preference(render.PromptVariant("harmless"), CTX, R1, R2)
    assert plain.cue == "Preferred Response=" and plain.user.startswith("Context - ")


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_chat_wrap_puts_cue_at_model_turn_and_tokenizes_like_whole_text(
    family, byte_level, tmp_path
):
    vocab = _vocab(tmp_path, byte_level, family)
    template, bos, model_header = TEMPLATES[family]
    fmt = chat.chat_format(vocab)
    assert fmt is not None and fmt.trims == (family != "chatml")
    for name, r in _rendered_cases():
        w = fmt.wrap(r)
        # The text is exactly the template's single user turn + the cue as model text.
        content = r.prefix + r.user
        want = render_jinja(template, [{"role": "user", "content": content}], True, bos_token=bos)
        assert w.text == want + r.cue, (family, name)
        assert w.suffix.endswith(model_header + r.cue) and w.cue == r.cue
        assert w.prefix == fmt.head + r.prefix  # shared across pairs: head + preamble block
        # Shared prefix + suffix tokenization equals tokenizing the whole text, and the
        # token ids start with exactly one BOS (written by the template) with or without
        # add_bos.
        whole = list(vocab.encode(w.text))
        for add_bos in (False, True):
            t = tokens.tokenize_prompt(vocab, w.prefix, w.suffix, add_bos=add_bos)
            assert list(t.prefix + t.suffix) == whole, (family, name)
            if bos:
                assert t.prefix[0] == vocab.bos_id and vocab.bos_id not in t.prefix[1:]
        # The cue's last piece is the last token: the candidates are read right after it.
        assert vocab.decode(list(t.suffix)).endswith(r.cue)


def test_chat_modes_and_errors(byte_level, tmp_path):
    vocab = _vocab(tmp_path, byte_level, "gemma")
    assert chat.chat_format(vocab, "none") is None
    r = render.render_preference(render.PromptVariant("helpful"), CTX, R1, R2)
    assert chat.wrap(None, r) is r
    # A built-in family works for vocabularies without a template.
    fmt = chat.chat_format(object(), "qwen")
    assert fmt.head == "<|im_start|>user\n" and fmt.tail == "<|im_end|>\n<|im_start|>assistant\n"
    assert chat.chat_format(object()) is None  # SentencePiece-like: plain prompts
    with pytest.raises(ValueError, match="LabelerSettings.chat_template='gemma2'"):
        LabelerSettings(chat_template="gemma2")
    with pytest.raises(ValueError, match="appears 2 times"):
        chat.ChatFormat.from_renderer(lambda c: c + c)
    with pytest.raises(ValueError, match="beyond trimming"):
        chat.ChatFormat.from_renderer(lambda c: c.replace(" ", "_"))
    with pytest.raises(ValueError, match="answer cue"):
        chat.ChatFormat("a", "b").wrap(render.RenderedPrompt("p", "s"))


def test_labeler_direct_and_judge_in_chat_template(byte_level, tmp_path):
    vocab = _vocab(tmp_path, byte_level, "gemma")
    bos = vocab.bos_id
    pair = {"id": "a", "context": CTX, "response1": R1, "response2": R2}

    class IdScorer(RecordingScorer):
        def score(self, prefix, suffixes, candidate_ids):
            for s in suffixes:
                self.texts.append(list(prefix) + list(s))
            q = [0.3, 0.1] if len(candidate_ids) == 2 else np.linspace(0.01, 0.05, 10)
            return np.tile(np.log(q), (len(suffixes), 1))

    for mode in ("auto", "none"):
        sc = IdScorer(vocab)
        Labeler(sc, vocab, render.PromptVariant("helpful"), LabelerSettings(chat_template=mode))
        Labeler(
            sc,
            vocab,
            render.PromptVariant("helpful"),
            LabelerSettings(chat_template=mode, add_bos=True),
        ).label([pair])
        r = render.render_preference(render.PromptVariant("helpful"), CTX, R1, R2)
        if mode == "auto":
            text = render_jinja(
                GEMMA, [{"role": "user", "content": r.prefix + r.user}], True, bos_token="<bos>"
            )
            want = list(vocab.encode(text + r.cue))
        else:  # plain text, BOS from add_bos
            want = [bos] + list(vocab.encode(r.text))
        assert sc.texts[0] == want and sc.texts[0].count(bos) == 1
    # The harmless-rate judge and d-RLAIF read the same chat layout.
    judge = HarmlessJudge(IdScorer(vocab), vocab)
    p = judge.p_harmless([CTX], [R1])
    assert p == pytest.approx([0.75])
    x = judge.prompt(CTX, R1)
    assert x.text.endswith("<start_of_turn>model\nVerdict=") and x.text.startswith("<bos>")
    ds = direct.DirectScorer(IdScorer(vocab), vocab, render.direct_prompt_for("harmless"))
    x = ds.render_prompt(CTX, R1)
    assert x.text.startswith("<bos><start_of_turn>user\n" + P.DIRECT_HARMLESS_PREAMBLE)
    # This byte-level BPE folds the space into the number (" 7"), so the prompt ends at
    # "SCORE:" and the candidates are the pieces " 1".." 10" (" 10" may be two pieces).
    assert x.text.endswith("<start_of_turn>model\nSCORE:")
    assert vocab.decode(list(ds.candidates.ids[:9])) == "".join(f" {i}" for i in range(1, 10))
    scores = ds.expected_scores([CTX, CTX], [R1, R2])
    if not ds.candidates.multi:  # the stub's scores as one piece each: Σ i·q_i / Σ q_i
        q = np.linspace(0.01, 0.05, 10)
        assert scores == pytest.approx([(q * np.arange(1, 11)).sum() / q.sum()] * 2)
    assert scores.shape == (2,) and np.all((scores >= 1) & (scores <= 10))

"""The real-world fixtures (tests/fixtures/real_world.py) are what a user would bring.

The data files parse with the repo's readers; the two HF tokenizers differ, carry the
special tokens of their family and agree with transformers' AutoTokenizer (encode, chat
template); labeling candidates resolve in both; the checkpoints import with `import_hf`
and give transformers' logits.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (CPU) builds the reference checkpoints")
transformers = pytest.importorskip("transformers", reason="transformers builds the checkpoints")

from rlaif_jax.data import formats  # noqa: E402
from rlaif_jax.data.hf_tokenizer import HFTokenizerVocabulary  # noqa: E402
from rlaif_jax.labeling import prompts as P  # noqa: E402
from rlaif_jax.labeling import render as R  # noqa: E402
from rlaif_jax.labeling.tokens import resolve_candidates  # noqa: E402
from tests.fixtures import real_world as rw  # noqa: E402

KEYS = {
    "POLICY_HF_DIR",
    "LABELER_HF_DIR",
    "TLDR_TRAIN",
    "TLDR_VALIDATION",
    "TLDR_TEST",
    "COMPARISONS",
    "HH_HELPFUL_TRAIN",
    "HH_HELPFUL_TEST",
    "HH_HARMLESS_TRAIN",
    "HH_HARMLESS_TEST",
}
DIRS = {"llama": "POLICY_HF_DIR", "gemma": "LABELER_HF_DIR"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return rw.write_real_world(str(tmp_path_factory.mktemp("real_world")))


@pytest.fixture(scope="module")
def vocabs(world):
    return {f: HFTokenizerVocabulary(world[key]) for f, key in DIRS.items()}


def _records(world):
    tldr = {s: list(formats.read_tldr(world[f"TLDR_{s.upper()}"])) for s in ("train", "validation")}
    pairs = list(formats.read_comparisons(world["COMPARISONS"], split="train"))
    hh = list(formats.read_hh(world["HH_HELPFUL_TRAIN"], "helpful"))
    return tldr, pairs, hh


def test_files_parse_with_the_readers(world):
    assert set(world) == KEYS and all(os.path.exists(p) for p in world.values())
    for split, n in rw.SIZES["tldr"].items():
        sft = list(formats.read_tldr(world[f"TLDR_{split.upper()}"]))
        prompts = list(formats.read_tldr(world[f"TLDR_{split.upper()}"], role="prompts"))
        assert len(sft) == len(prompts) == n
        assert all(r["context"].startswith("SUBREDDIT: r/") and r["response"] for r in sft)
    ids = set()
    for split, n in rw.SIZES["comparisons"].items():
        rows = list(formats.read_comparisons(world["COMPARISONS"], split=split))
        assert len(rows) == n
        ids |= {r["id"] for r in rows}
        assert {r["label"] for r in rows} == {0.0, 1.0}  # both orders are preferred
        assert all(1 <= r["confidence"] <= 9 and r["response1"] != r["response2"] for r in rows)
    assert len(ids) == sum(rw.SIZES["comparisons"].values())
    with open(world["COMPARISONS"]) as f:
        row = json.loads(f.readline())
    assert set(row) == {"info", "summaries", "choice", "worker", "batch", "split", "extra"}
    assert set(row["summaries"][0]) == {"text", "policy", "note"}
    for subset in ("helpful", "harmless"):
        for split, n in rw.SIZES["hh"].items():
            rows = list(formats.read_hh(world[f"HH_{subset.upper()}_{split.upper()}"], subset))
            assert len(rows) == n and all(r["response1"] != r["response2"] for r in rows)
            assert all(r["context"].startswith("\n\nHuman: ") for r in rows)
            assert all(r["context"].endswith("\n\nAssistant:") for r in rows)
            multi = [r for r in rows if r["context"].count("Human:") > 1]
            assert 0 < len(multi) < n
    # Deterministic in the seed.
    assert rw.write_tldr(os.devnull, 3, seed=5) == rw.write_tldr(os.devnull, 3, seed=5)
    assert rw.write_tldr(os.devnull, 3, seed=5) != rw.write_tldr(os.devnull, 3, seed=6)


def test_vocabularies_differ_with_family_special_ids(vocabs):
    llama, gemma = vocabs["llama"], vocabs["gemma"]
    assert llama.vocab_size == rw.DEFAULT_VOCAB_SIZE["llama"] != gemma.vocab_size
    tid = llama.token_to_id
    assert llama.bos_id == tid("<|begin_of_text|>") > 700  # specials after the BPE pieces
    assert llama.eos_ids == (tid("<|eot_id|>"), tid("<|end_of_text|>"))  # multi-EOS
    assert llama.pad_id == llama.eos_id  # no pad token: HF falls back to EOS
    assert (gemma.pad_id, gemma.eos_ids, gemma.bos_id) == (0, (1,), 2)
    assert gemma.unk_id == 3 and gemma.token_to_id("<0x41>") == len(rw.GEMMA_SPECIALS) + 0x41
    text = "My landlord will not return my security deposit, what would you do?"
    assert llama.encode(text) != gemma.encode(text)
    for v in vocabs.values():
        assert v.decode(v.encode(text)) == text
        assert len(v.encode(text)) < len(text) / 2  # trained merges, not characters


def test_labeling_candidates_resolve(world, vocabs):
    tldr, pairs, hh = _records(world)
    contexts = {"summarize": pairs[0], "helpful": hh[0]}
    for v in vocabs.values():
        for task, pair in contexts.items():
            ending = P.ENDINGS[task]
            c = resolve_candidates(v, ending, P.PREFERENCE_CANDIDATES)
            assert c.lead == () and len(set(c.ids)) == 2 and c.multi == ()
            # The same pieces follow the ending at the end of a real prompt.
            variant = R.PromptVariant(task=task, num_shots=1)
            suffix = R.render_preference(
                variant, pair["context"], pair["response1"], pair["response2"]
            ).suffix
            for cand, cid in zip(P.PREFERENCE_CANDIDATES, c.ids, strict=True):
                assert v.encode(suffix + cand) == v.encode(suffix) + [cid]
        s = resolve_candidates(v, P.DIRECT_ENDING, P.SCORE_CANDIDATES, allow_two_piece=("10",))
        assert s.lead == () and len(set(s.ids[:9])) == 9
        assert s.multi == ((9, (v.token_to_id("1"), v.token_to_id("0"))),)
        suffix = R.render_direct(R.DirectPrompt("summarize"), tldr["train"][0]["context"], "x")
        assert v.encode(suffix.suffix + "7") == v.encode(suffix.suffix) + [s.ids[6]]


def test_tokenizers_agree_with_transformers(world, vocabs):
    tldr, pairs, hh = _records(world)
    texts = [tldr["validation"][0]["context"], pairs[1]["response2"], hh[3]["context"]]
    texts += [R.render_preference(R.PromptVariant(preamble="detailed"), "c", "a", "b").text]
    texts += ["unseen: Ünïcödé 日本語 🙂", "  two  spaces\tand tabs\n"]
    chats = {
        "llama": [{"role": "system", "content": "Be brief."}],
        "gemma": [],
    }
    for family, v in vocabs.items():
        hf = transformers.AutoTokenizer.from_pretrained(world[DIRS[family]])
        assert len(hf) == v.vocab_size
        for t in texts:
            assert v.encode(t) == hf.encode(t, add_special_tokens=False), (family, t)
            assert hf.encode(t) == [v.bos_id] + v.encode(t)  # add_bos_token, no EOS
            assert v.decode(v.encode(t)) == t
        if family == "gemma":  # nothing the data or prompts hold falls back to bytes
            assert not [i for t in texts[:4] for i in v.encode(t) if i < 6 + 256]
        messages = chats[family] + [
            {"role": "user", "content": hh[0]["context"]},
            {"role": "assistant", "content": hh[0]["response1"]},
            {"role": "user", "content": "Summarize that. "},
        ]
        ours = v.render_chat(messages)
        ref = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert ours == ref
        assert ours.startswith(hf.bos_token) and ours.count(hf.bos_token) == 1
        ids = v.encode(ours)
        assert ids[0] == v.bos_id and ids.count(v.bos_id) == 1


@pytest.mark.parametrize("family", sorted(DIRS))
def test_checkpoints_import_and_match_transformers(world, vocabs, family):
    from rlaif_jax.models import model as model_lib
    from rlaif_jax.sharding.mesh import make_mesh
    from rlaif_jax.sharding.model_params import import_hf
    from rlaif_jax.sharding.rules import get_rules

    directory, v = world[DIRS[family]], vocabs[family]
    for name in ("config.json", "model.safetensors", *rw.TOKENIZER_FILES):
        assert os.path.isfile(os.path.join(directory, name)), name
    with open(os.path.join(directory, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["vocab_size"] == v.vocab_size and cfg["bos_token_id"] == v.bos_id
    eos = cfg["eos_token_id"]
    assert sorted(eos if isinstance(eos, list) else [eos]) == sorted(v.eos_ids)
    with open(os.path.join(directory, "generation_config.json")) as f:
        gen = json.load(f)
    gen_eos = gen["eos_token_id"]
    assert sorted(gen_eos if isinstance(gen_eos, list) else [gen_eos]) == sorted(v.eos_ids)
    params, config = import_hf(
        directory, make_mesh(), get_rules("fsdp"), dtype=jnp.float32, param_dtype=jnp.float32
    )
    assert config.vocab_size == v.vocab_size
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        directory, attn_implementation="eager"
    ).eval()
    tldr, _, _ = _records(world)
    rows = [[v.bos_id] + v.encode(r["context"])[:15] for r in tldr["train"][:2]]
    tokens = np.asarray(rows, np.int32)  # [B=2, L=16]
    ours, _ = model_lib.apply(config, params, jnp.asarray(tokens))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    assert ours.shape == ref.shape == (2, 16, v.vocab_size)
    assert np.abs(ref).max() > 0.1  # random weights: layout mistakes would change logits
    np.testing.assert_allclose(np.asarray(ours, np.float32), ref, atol=1e-4, rtol=1e-4)

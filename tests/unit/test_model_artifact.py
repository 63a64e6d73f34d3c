"""Self-describing model directories (`rlaif_jax.model_artifact`): write -> read round
trips for SentencePiece and Hugging Face tokenizers, gin overrides that agree or
contradict, raw HF checkpoints read as a role, and params for a different head."""

import json

import jax
import numpy as np
import pytest

from rlaif_jax import model_artifact
from rlaif_jax.data import vocab as vocab_lib
from rlaif_jax.data.hf_tokenizer import HFTokenizerVocabulary
from rlaif_jax.data.layout import InputLayout, task_layout
from rlaif_jax.models.config import get_config
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules
from rlaif_jax.train.checkpoint import save_params

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "Preferred Summary=1"] * 20


@pytest.fixture(scope="module")
def spm_vocab(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("spm") / "spm")
    return vocab_lib.sentencepiece_vocabulary(vocab_lib.train_sentencepiece(TEXTS, prefix, 64))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from tests.fixtures import real_world

    pytest.importorskip("transformers")
    d = str(tmp_path_factory.mktemp("hf_llama"))
    real_world.make_hf_tokenizer(d, "llama", TEXTS, vocab_size=300, include_prompts=False)
    return real_world.make_hf_checkpoint(d, "llama", d)


def _mesh():
    return make_mesh(data=1, fsdp=-1), get_rules("fsdp")


def test_round_trip_sentencepiece_and_params(tmp_path, spm_vocab):
    config = get_config("tiny")
    layout = InputLayout(prompt_suffix="\nTL;DR:", max_context=40, max_response=8)
    mesh, rules = _mesh()
    params, _ = model_params.init_params(config, jax.random.PRNGKey(3), mesh, rules, "lm")
    d = tmp_path / "sft"
    model_artifact.write_model_artifact(str(d), config, "lm", spm_vocab, layout, source="test")
    save_params(str(d / "ckpt"), params)
    art = model_artifact.open_model(str(d))
    assert (art.kind, art.head, art.family, art.source) == ("rlaif", "lm", "llama", "test")
    assert art.config == config and art.layout == layout
    assert art.vocab.encode("the cat sat") == spm_vocab.encode("the cat sat")
    assert art.tokenizer["kind"] == "sentencepiece" and (d / "spm.model").is_file()
    restored, shardings = model_artifact.load_params(art, mesh, rules)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # An LM read as a reward/value model keeps its trunk under a fresh scalar head.
    scalar, _ = model_artifact.load_params(art, mesh, rules, head="scalar")
    assert "score_head" in scalar and "unembed" not in scalar
    np.testing.assert_array_equal(
        np.asarray(scalar["embedder"]["embedding"]), np.asarray(params["embedder"]["embedding"])
    )
    assert jax.tree.structure(shardings) == jax.tree.structure(restored)


def test_gin_values_that_contradict_the_artifact_are_errors_naming_both(tmp_path, spm_vocab):
    config = get_config("tiny")
    layout = InputLayout(prompt_suffix="\nTL;DR:", max_context=40, max_response=8)
    model_artifact.write_model_artifact(str(tmp_path), config, "lm", spm_vocab, layout)
    art = model_artifact.open_model(str(tmp_path))
    # Restating the artifact, or changing compute settings only, is fine.
    assert art.layout_for("summarize", "rl", max_context=40, prompt_suffix=None) == layout
    assert art.config_with({"dtype": "bfloat16", "remat": "full"}, "x").dtype == "bfloat16"
    assert art.config_with({"num_layers": 2}, "x") == config
    with pytest.raises(model_artifact.ArtifactError, match=r"max_response = 16.*= 8"):
        art.layout_for("summarize", "sft", max_response=16)
    with pytest.raises(model_artifact.ArtifactError, match=r"RLSettings.max_response = 16"):
        art.layout_for("summarize", "RLSettings", max_response=16)
    with pytest.raises(model_artifact.ArtifactError, match=r"TL;DR"):
        art.layout_for("summarize", "evaluate", prompt_suffix="")
    with pytest.raises(model_artifact.ArtifactError, match=r"'num_layers'\] = 4.*num_layers = 2"):
        art.config_with({"num_layers": 4}, "rl.model_overrides")
    with pytest.raises(model_artifact.ArtifactError, match="no field"):
        art.config_with({"depth": 4}, "rl.model_overrides")


def test_damaged_or_missing_artifacts_say_which_file(tmp_path, spm_vocab):
    with pytest.raises(model_artifact.ArtifactError, match="is not a model directory"):
        model_artifact.open_model(str(tmp_path))
    model_artifact.write_model_artifact(
        str(tmp_path), get_config("tiny"), "lm", spm_vocab, InputLayout()
    )
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["config"]["depth"] = 3
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(model_artifact.ArtifactError, match=r"model.json: config has unknown"):
        model_artifact.open_model(str(tmp_path))
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(model_artifact.ArtifactError, match=r"model.json: invalid JSON at line 1"):
        model_artifact.open_model(str(tmp_path))
    with pytest.raises(model_artifact.ArtifactError, match="no such model directory"):
        model_artifact.resolve_model_dir(str(tmp_path), "rm_ai", "reward_model_from_checkpoint")


def test_hf_checkpoint_is_a_role_with_the_task_layout(tmp_path, hf_dir):
    art = model_artifact.open_model(hf_dir)
    assert (art.kind, art.head, art.family, art.layout) == ("hf", "lm", "llama", None)
    vocab = HFTokenizerVocabulary(hf_dir)
    assert art.vocab.eos_ids == vocab.eos_ids and len(vocab.eos_ids) > 1
    layout = art.layout_for("helpful", "sft", max_context=64)
    assert layout == task_layout("helpful", add_bos=True, max_context=64)
    assert art.layout_for("summarize", "sft").prompt_suffix == "\nTL;DR:"
    with pytest.raises(model_artifact.ArtifactError, match="no task"):
        art.layout_for(None, "rl")
    # Written back as a stage output, the HF tokenizer files and every stop id travel along.
    out = tmp_path / "sft"
    model_artifact.write_model_artifact(str(out), art.config, "lm", art.vocab, layout, art.family)
    again = model_artifact.open_model(str(out))
    assert again.vocab.eos_ids == vocab.eos_ids and again.vocab.bos_id == vocab.bos_id
    assert again.vocab.encode("the dog sat") == vocab.encode("the dog sat")
    assert again.tokenizer["kind"] == "hf" and (out / "tokenizer.json").is_file()
    mesh, rules = _mesh()
    from rlaif_jax.sharding.model_params import import_hf

    params, _ = model_artifact.load_params(art, mesh, rules)
    direct, _ = import_hf(hf_dir, mesh, rules)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(direct), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

"""HF checkpoint import/export against transformers (PyTorch CPU, float32, tiny models).

For each family a tiny random transformers model is saved with `save_pretrained`;
import -> export must reproduce its tensors bit-exactly and transformers must load the
export to the same logits; with our Transformer, imported params must give
transformers' logits (padded batches included).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

torch = pytest.importorskip("torch", reason="torch (CPU) is needed to build reference models")
transformers = pytest.importorskip("transformers", reason="transformers builds reference models")

from rlaif_jax.models.importers import hf as hf_import  # noqa: E402
from rlaif_jax.models.importers import safetensors_io as sio  # noqa: E402
from rlaif_jax.models.importers.export import export_hf  # noqa: E402
from rlaif_jax.models.importers.hf_config import config_kwargs  # noqa: E402
from rlaif_jax.sharding.mesh import make_mesh  # noqa: E402

V, D, F, L = 96, 64, 96, 2
COMMON = dict(
    vocab_size=V,
    hidden_size=D,
    intermediate_size=F,
    num_hidden_layers=L,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    attn_implementation="eager",
)

# family -> (config class, config kwargs, expected ModelConfig fields)
FAMILIES = {
    "gemma": (
        "GemmaConfig",
        dict(head_dim=16),
        dict(
            norm_plus_one=True,
            scale_embeddings=True,
            tie_embeddings=True,
            mlp_activation="gelu_tanh",
        ),
    ),
    "gemma2": (
        "Gemma2Config",
        dict(
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=4,
            final_logit_softcapping=3.0,
            attn_logit_softcapping=2.0,
        ),
        dict(
            post_attn_norm=True,
            post_mlp_norm=True,
            sliding_window=4,
            sliding_window_pattern=2,
            logit_softcap=3.0,
            attn_softcap=2.0,
            query_pre_attn_scalar=24.0,
        ),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        dict(
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0},
            },
        ),
        dict(
            qk_norm=True,
            rope_local_theta=10000.0,
            rope_theta=1e6,
            rope_scaling={"rope_type": "linear", "factor": 2.0},
        ),
    ),
    "llama": (
        "LlamaConfig",
        dict(
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            tie_word_embeddings=False,
        ),
        dict(tie_embeddings=False, head_dim=16, mlp_activation="silu", rope_theta=500000.0),
    ),
    "qwen2": (
        "Qwen2Config",
        dict(tie_word_embeddings=True),
        dict(qkv_bias=True, tie_embeddings=True),
    ),
    "qwen3": (
        "Qwen3Config",
        dict(head_dim=32),
        dict(qk_norm=True, head_dim=32, tie_embeddings=False),
    ),
}


def _tiny_hf(family: str, directory: str, seed: int = 0):
    cls_name, extra, _ = FAMILIES[family]
    cfg = getattr(transformers, cls_name)(**COMMON, **extra)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # random everything (norms too) so layout errors show
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.15)
            if "norm" in name and not family.startswith("gemma"):
                p.add_(1.0)  # plain RMSNorm scales sit around 1; Gemma's (1+w) around 0
    model.save_pretrained(directory)
    return model


def _hf_logits(model, tokens, mask=None, positions=None) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens),
            attention_mask=None if mask is None else torch.tensor(mask.astype(np.int64)),
            position_ids=None if positions is None else torch.tensor(positions),
        )
    return out.logits.float().numpy()


def _abstract_from_maps(maps, mesh, dtype=jnp.float32):
    """What model_params.abstract_params returns, built from the map (no model needed)."""
    out = {}
    for m in maps:
        shape = m.ours_shape()
        spec = P("fsdp") if shape[0] % 2 == 0 else P()
        out[m.path] = jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))
    return hf_import._tree_from_paths(out)


def _tensors(directory):
    with sio.Checkpoint(directory) as ckpt:
        return {n: (ckpt.tensor(n).dtype, ckpt.tensor(n).tobytes()) for n in ckpt.names}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_config_import_and_export_round_trip(family, tmp_path):
    src, dst = str(tmp_path / "hf"), str(tmp_path / "export")
    model = _tiny_hf(family, src)
    with open(os.path.join(src, "config.json")) as f:
        fam, kw = config_kwargs(json.load(f))
    assert fam == family
    for key, want in FAMILIES[family][2].items():
        assert kw[key] == want, (key, kw[key], want)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    maps = hf_import.param_map(family, kw)
    with sio.Checkpoint(src) as ckpt:
        hf_import.check_names(set(ckpt.names), maps, src)
        params = hf_import.load_params(ckpt, maps, _abstract_from_maps(maps, mesh))
    export_hf(dst, params, kw, family)
    assert _tensors(dst) == _tensors(src)  # bit-exact, same names and dtypes
    # transformers reads our config.json and weights back to the same function.
    again = transformers.AutoModelForCausalLM.from_pretrained(
        dst, attn_implementation="eager"
    ).eval()
    tokens = np.random.default_rng(0).integers(0, V, (2, 9))
    np.testing.assert_array_equal(_hf_logits(again, tokens), _hf_logits(model, tokens))


def test_bf16_export_and_sharded_files(tmp_path):
    import ml_dtypes

    src = str(tmp_path / "hf")
    _tiny_hf("llama", src)
    with sio.Checkpoint(src) as ckpt:
        fam, kw = config_kwargs(ckpt.config)
        maps = hf_import.param_map(fam, kw)
        mesh = make_mesh(data=8)
        params = hf_import.load_params(ckpt, maps, _abstract_from_maps(maps, mesh, jnp.bfloat16))
    files = export_hf(str(tmp_path / "a"), params, kw, fam, max_shard_bytes=20_000)
    assert sio.INDEX_FILE in files and len(files) > 3
    export_hf(str(tmp_path / "b"), params, kw, fam, dtype=ml_dtypes.bfloat16)
    a, b = _tensors(str(tmp_path / "a")), _tensors(str(tmp_path / "b"))
    assert a == b and all(dt == ml_dtypes.bfloat16 for dt, _ in a.values())
    with sio.Checkpoint(str(tmp_path / "a")) as ckpt:  # bf16 values are the rounded f32 ones
        ref = sio.Checkpoint(src)
        for n in ckpt.names:
            np.testing.assert_array_equal(ckpt.tensor(n), ref.tensor(n).astype(ml_dtypes.bfloat16))


def test_mismatched_checkpoints_name_the_tensors(tmp_path):
    src = str(tmp_path / "hf")
    _tiny_hf("qwen2", src)
    with sio.Checkpoint(src) as ckpt:
        fam, kw = config_kwargs(ckpt.config)
        names = set(ckpt.names)
    maps = hf_import.param_map(fam, kw)
    with pytest.raises(
        sio.CheckpointError, match=r"missing: \['model.layers.1.mlp.up_proj.weight'\]"
    ):
        hf_import.check_names(names - {"model.layers.1.mlp.up_proj.weight"}, maps, src)
    with pytest.raises(sio.CheckpointError, match=r"unexpected: \['model.layers.9.foo'\]"):
        hf_import.check_names(names | {"model.layers.9.foo"}, maps, src)
    # A config that disagrees with the weights: every mis-shaped tensor is named with its file.
    wrong = hf_import.param_map(fam, {**kw, "mlp_dim": F + 2})
    mesh = make_mesh(data=8)
    with sio.Checkpoint(src) as ckpt:
        with pytest.raises(
            sio.CheckpointError,
            match=r"model.layers.0.mlp.gate_proj.weight in .*model.safetensors: shape \[96, 64\], expected \[98, 64\]",
        ):
            hf_import.load_params(ckpt, wrong, _abstract_from_maps(wrong, mesh))
    # Unsupported architecture options are refused by name.
    with pytest.raises(ValueError, match="mlp_bias=True is not supported"):
        config_kwargs({**ckpt.config, "model_type": "llama", "mlp_bias": True})
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        config_kwargs({"model_type": "gpt2"})


def test_reward_model_scalar_head_round_trip(tmp_path):
    src, dst = str(tmp_path / "hf"), str(tmp_path / "export")
    cfg = transformers.Qwen3Config(**COMMON, num_labels=1, pad_token_id=0)
    torch.manual_seed(0)
    rm = transformers.AutoModelForSequenceClassification.from_config(cfg).eval()
    with torch.no_grad():
        for p in rm.parameters():
            p.normal_(0.0, 0.15)
    rm.save_pretrained(src)
    with sio.Checkpoint(src) as ckpt:
        fam, kw = config_kwargs(ckpt.config)
        maps = hf_import.param_map(fam, kw, head="scalar")
        hf_import.check_names(set(ckpt.names), maps, src)
        params = hf_import.load_params(ckpt, maps, _abstract_from_maps(maps, make_mesh(data=8)))
    assert params["score_head"]["kernel"].shape == (D, 1)
    export_hf(dst, params, kw, fam, head="scalar", extra_config={"pad_token_id": 0})
    assert _tensors(dst) == _tensors(src)
    again = transformers.AutoModelForSequenceClassification.from_pretrained(
        dst, attn_implementation="eager"
    ).eval()
    tokens = torch.tensor(np.random.default_rng(0).integers(1, V, (1, 7)))
    with torch.no_grad():
        np.testing.assert_array_equal(again(tokens).logits.numpy(), rm(tokens).logits.numpy())


# --- with our Transformer ---------------------------------------------------------------


def _our_logits(params, config, tokens, mask=None, positions=None):
    from rlaif_jax.models.transformer import Transformer

    model = Transformer(config, head="lm")
    out, _ = model.apply(
        {"params": params},
        jnp.asarray(tokens),
        positions=None if positions is None else jnp.asarray(positions),
        attention_mask=None if mask is None else jnp.asarray(mask),
    )
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_match_transformers(family, tmp_path):
    pytest.importorskip(
        "rlaif_jax.models.model", reason="the model (rlaif_jax.models) is not there yet"
    )
    from rlaif_jax.sharding.model_params import import_hf
    from rlaif_jax.sharding.rules import get_rules

    src = str(tmp_path / "hf")
    model = _tiny_hf(family, src, seed=1)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    params, config = import_hf(
        src, mesh, get_rules("fsdp_tp"), dtype=jnp.float32, param_dtype=jnp.float32
    )
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, V, (2, 12))
    np.testing.assert_allclose(
        _our_logits(params, config, tokens), _hf_logits(model, tokens), atol=1e-4, rtol=1e-4
    )
    # Right padding (row 0) and left padding with explicit positions (row 1).
    mask = np.ones((2, 12), bool)
    mask[0, 8:] = False
    mask[1, :3] = False
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    ours = _our_logits(params, config, tokens, mask, positions)
    ref = _hf_logits(model, tokens, mask, positions)
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=1e-4)
    # Left-padded row equals the unpadded sequence.
    alone = _hf_logits(model, tokens[1:, 3:])
    np.testing.assert_allclose(ours[1, 3:], alone[0], atol=1e-4, rtol=1e-4)
    # Export of the imported params reproduces the checkpoint bit-exactly.
    export_hf(str(tmp_path / "export"), params, config, family)
    assert _tensors(str(tmp_path / "export")) == _tensors(src)

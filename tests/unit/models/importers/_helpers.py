"""Tiny random transformers checkpoints (PyTorch CPU, float32) for the importer tests,
and what they read back."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

torch = pytest.importorskip("torch", reason="torch (CPU) is needed to build reference models")
transformers = pytest.importorskip("transformers", reason="transformers builds reference models")

from rlaif_jax.models.importers import hf as hf_import  # noqa: E402
from rlaif_jax.models.importers import safetensors_io as sio  # noqa: E402

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

"""Model configuration and named presets.

One `ModelConfig` describes every role (policy, value, anchor, reward, labeler); the
family options map Gemma 1/2/3, Llama 2/3.x and Qwen 2.5/3 checkpoints onto the same
module (see `rlaif_jax/models/importers`).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes (V vocab, D model, H heads, K kv heads, Dh head dim, F mlp) and options."""

    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    mlp_activation: str = "silu"  # 'silu' (SwiGLU) | 'gelu_tanh' (GeGLU) | 'gelu'
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    logit_softcap: float | None = None
    attn_softcap: float | None = None
    max_len: int = 2048
    dtype: str = "bfloat16"  # compute dtype
    param_dtype: str = "float32"  # master weights
    remat: str = "none"  # 'none' | 'full' | 'dots'
    # Family options.
    qk_norm: bool = False  # RMSNorm on q and k per head (Qwen3, Gemma3)
    norm_plus_one: bool = False  # RMSNorm scales by (1 + w) (Gemma)
    scale_embeddings: bool = False  # embeddings * sqrt(D) (Gemma)
    qkv_bias: bool = False  # biases on q/k/v projections (Qwen2)
    post_attn_norm: bool = False  # sandwich norms (Gemma2/3)
    post_mlp_norm: bool = False
    query_pre_attn_scalar: float | None = None  # attention scale = this ** -0.5 (Gemma2/3)
    sliding_window: int | None = None  # local attention window for non-global layers
    sliding_window_pattern: int = 1  # layer i is global iff (i + 1) % pattern == 0
    rope_local_theta: float | None = None  # rope base of local layers (Gemma3)
    rope_scaling: Any = None  # None | dict(rope_type='linear'|'llama3', factor, ...)
    # 'xla' (einsums over an explicit mask) | 'cudnn' (cuDNN flash attention, GPU, bf16) |
    # 'dpa' (jax.nn.dot_product_attention, backend's pick) for causal self-attention over
    # right-padded rows (train, score, prefill); decode steps always use the einsums.
    attention_impl: str = "xla"

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads={self.num_heads} must be a multiple of "
                f"num_kv_heads={self.num_kv_heads}."
            )
        if self.mlp_activation not in ("silu", "gelu_tanh", "gelu"):
            raise ValueError(f"ModelConfig.mlp_activation={self.mlp_activation!r} is unknown.")
        if self.attention_impl not in ("xla", "cudnn", "dpa"):
            raise ValueError(
                f"ModelConfig.attention_impl={self.attention_impl!r}: use 'xla', 'cudnn' or 'dpa'."
            )
        if self.remat not in ("none", "full", "dots"):
            raise ValueError(f"ModelConfig.remat={self.remat!r}: use 'none', 'full' or 'dots'.")
        if isinstance(self.rope_scaling, dict):  # keep the config hashable (jit static)
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    def is_global_layer(self, i: int) -> bool:
        return self.sliding_window is None or (i + 1) % self.sliding_window_pattern == 0

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)


def _llama(v, d, n, h, k, f, **kw) -> dict:
    return dict(
        vocab_size=v,
        d_model=d,
        num_layers=n,
        num_heads=h,
        num_kv_heads=k,
        head_dim=d // h,
        mlp_dim=f,
        **kw,
    )


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vocab_size=256,
        d_model=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        dtype="float32",
        max_len=512,
    ),
    # The benchmark shape the peer figures were measured on (953M params).
    "bench_1b": _llama(32000, 2048, 16, 16, 16, 5632, max_len=2048),
    "llama3_1b": _llama(
        128256,
        2048,
        16,
        32,
        8,
        8192,
        tie_embeddings=True,
        rope_theta=500000.0,
        norm_eps=1e-5,
        max_len=8192,
        rope_scaling=dict(
            rope_type="llama3",
            factor=32.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
    ),
    "llama3_8b": _llama(
        128256, 4096, 32, 32, 8, 14336, rope_theta=500000.0, norm_eps=1e-5, max_len=8192
    ),
    "gemma2_2b": dict(
        vocab_size=256000,
        d_model=2304,
        num_layers=26,
        num_heads=8,
        num_kv_heads=4,
        head_dim=256,
        mlp_dim=9216,
        mlp_activation="gelu_tanh",
        tie_embeddings=True,
        norm_plus_one=True,
        scale_embeddings=True,
        post_attn_norm=True,
        post_mlp_norm=True,
        query_pre_attn_scalar=256.0,
        logit_softcap=30.0,
        attn_softcap=50.0,
        sliding_window=4096,
        sliding_window_pattern=2,
        max_len=8192,
    ),
    "qwen2p5_1p5b": dict(
        vocab_size=151936,
        d_model=1536,
        num_layers=28,
        num_heads=12,
        num_kv_heads=2,
        head_dim=128,
        mlp_dim=8960,
        tie_embeddings=True,
        qkv_bias=True,
        rope_theta=1e6,
        max_len=32768,
    ),
    "qwen2p5_7b": dict(
        vocab_size=152064,
        d_model=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        mlp_dim=18944,
        qkv_bias=True,
        rope_theta=1e6,
        max_len=32768,
    ),
}


def register_preset(name: str, fields: dict[str, Any]) -> None:
    """Adds preset `name` (ModelConfig field values) to the table `get_config` reads.

    For presets that live outside this module (the toy world's, `rlaif_jax.toy.presets`).
    Registering the same name again with the same fields is a no-op (modules may be
    imported twice, e.g. by a config file and by a test); with different fields it is an error.
    """
    unknown = set(fields) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise ValueError(f"register_preset({name!r}): unknown ModelConfig fields {sorted(unknown)}")
    if name in PRESETS and PRESETS[name] != dict(fields):
        raise ValueError(
            f"register_preset({name!r}): a different preset of that name is registered "
            f"({PRESETS[name]} vs {dict(fields)})"
        )
    PRESETS[name] = dict(fields)


def get_config(name: str = "tiny", **overrides) -> ModelConfig:
    """The preset `name` with field overrides, e.g. `get_config('tiny', num_layers=1)`.

    Presets registered elsewhere (`register_preset`) exist once their module is imported:
    the toy world's ('toy_policy', 'toy_labeler') with `import rlaif_jax.toy.presets`."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown model preset {name!r}; presets: {sorted(PRESETS)}. "
            "Presets defined elsewhere exist once their module is imported, e.g. the toy "
            "world's with `import rlaif_jax.toy.presets` (the toy task file imports it)."
        )
    return ModelConfig(**{**PRESETS[name], **overrides})


def num_params(config: ModelConfig, head: str = "lm") -> int:
    """Parameter count (embeddings included)."""
    c = config
    attn = c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    if c.qkv_bias:
        attn += c.head_dim * (c.num_heads + 2 * c.num_kv_heads)
    if c.qk_norm:
        attn += 2 * c.head_dim
    mlp = 3 * c.d_model * c.mlp_dim
    norms = c.d_model * (2 + int(c.post_attn_norm) + int(c.post_mlp_norm))
    per_layer = attn + mlp + norms
    embed = c.vocab_size * c.d_model
    out = embed if head == "lm" and not c.tie_embeddings else (c.d_model if head == "scalar" else 0)
    return c.num_layers * per_layer + embed + out + c.d_model


def flops_per_token(config: ModelConfig, seq_len: int, training: bool = True) -> float:
    """Model FLOPs per token: 2N (forward) or 6N (train) plus causal attention scores."""
    c = config
    # Matmul params: the embedding lookup is not a matmul, the (tied or untied)
    # unembedding is.
    n = num_params(c)
    if not c.tie_embeddings:
        n -= c.vocab_size * c.d_model
    attn = 2 * c.num_layers * c.num_heads * c.head_dim * seq_len  # QK^T + AV, causal average
    per_fwd = 2 * n + attn
    return 3 * per_fwd if training else per_fwd

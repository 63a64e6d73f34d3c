"""Hugging Face `config.json` <-> `ModelConfig` for Gemma 1/2/3, Llama 2/3.x, Qwen 2/2.5/3.

Every architecture difference between the families is a `ModelConfig` option:

| HF                                 | ModelConfig                                           |
| ---------------------------------- | ----------------------------------------------------- |
| Gemma (1+w) RMSNorm, sqrt(D) embed | norm_plus_one, scale_embeddings                       |
| Gemma2/3 sandwich norms            | post_attn_norm, post_mlp_norm                         |
| Gemma2 soft-capping                | logit_softcap, attn_softcap                           |
| Gemma2/3 query_pre_attn_scalar     | query_pre_attn_scalar                                 |
| sliding/full `layer_types`         | sliding_window, sliding_window_pattern (every p-th full) |
| Gemma3 local rope base             | rope_local_theta                                      |
| rope_scaling linear / llama3       | rope_scaling                                          |
| Qwen2 q/k/v bias                   | qkv_bias                                              |
| Qwen3 / Gemma3 q/k RMSNorm         | qk_norm                                               |

Both the legacy keys (`rope_theta`, `rope_scaling`, `rope_local_base_freq`,
`sliding_window_pattern`) and transformers 5's `rope_parameters` / `layer_types` are
read. Options the model cannot express raise `ValueError` naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# model_type -> family name used by the tensor maps and the exporter.
FAMILIES = {
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",  # multimodal checkpoint: the text_config and language model only
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}

# HF architecture class and model_type written on export.
EXPORT_NAMES = {
    "gemma": ("GemmaForCausalLM", "gemma"),
    "gemma2": ("Gemma2ForCausalLM", "gemma2"),
    "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}

_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
}
_HF_ACTIVATIONS = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}

# Defaults of the transformers config classes for keys a config.json may omit.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma": {"tie_word_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 10000.0},
    "gemma2": {
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
        "sliding_window": 4096,
    },
    "gemma3": {
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10000.0,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
    },
    "llama": {"tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 10000.0},
    "qwen2": {"tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 10000.0},
    "qwen3": {"tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 10000.0},
}


def family_of(hf: dict, where: str = "config.json") -> str:
    """The family ('gemma', 'gemma2', 'gemma3', 'llama', 'qwen2', 'qwen3') of a config."""
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(
            f"{where}: model_type {model_type!r} is not supported; supported: {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


def text_config(hf: dict) -> dict:
    """The language-model part of a config (multimodal Gemma 3 nests it in text_config)."""
    if hf.get("model_type") == "gemma3":
        return {"model_type": "gemma3_text", **hf.get("text_config", {})}
    return hf


def _rope_params(hf: dict, family: str, layer_type: str) -> tuple[float, dict | None]:
    """(theta, scaling) for one layer type from either config format."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and layer_type in params:
        params = params[layer_type]
    if isinstance(params, dict) and params:
        theta = params.get("rope_theta")
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        if family == "gemma3" and layer_type == "sliding_attention":
            theta = hf.get("rope_local_base_freq")
            scaling = None
        else:
            theta = hf.get("rope_theta")
            scaling = hf.get("rope_scaling")
        theta = theta if theta is not None else _default(hf, family, layer_type)
    if theta is None:
        theta = _default(hf, family, layer_type)
    return float(theta), _scaling(scaling)


def _default(hf: dict, family: str, layer_type: str) -> float:
    key = (
        "rope_local_base_freq"
        if layer_type == "sliding_attention" and family == "gemma3"
        else "rope_theta"
    )
    return float(_DEFAULTS[family][key])


def _scaling(scaling: dict | None) -> dict | None:
    """HF rope_scaling -> ModelConfig.rope_scaling (None, 'linear' or 'llama3' dict)."""
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(scaling["factor"])}
    if kind == "llama3":
        return {
            "rope_type": "llama3",
            "factor": float(scaling["factor"]),
            "low_freq_factor": float(scaling["low_freq_factor"]),
            "high_freq_factor": float(scaling["high_freq_factor"]),
            "original_max_position_embeddings": int(scaling["original_max_position_embeddings"]),
        }
    raise ValueError(f"config.json: rope scaling type {kind!r} is not supported (linear, llama3)")


def _layer_types(hf: dict, family: str, num_layers: int) -> list[str]:
    if hf.get("layer_types"):
        return list(hf["layer_types"])
    if family == "gemma2":
        pattern = 2
    elif family == "gemma3":
        pattern = int(
            hf.get("sliding_window_pattern") or _DEFAULTS["gemma3"]["sliding_window_pattern"]
        )
    else:
        return ["full_attention"] * num_layers
    return [
        "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(num_layers)
    ]


def _pattern(layer_types: list[str]) -> int:
    """p such that layer i is full attention iff (i + 1) % p == 0 (p=1: all full)."""
    n = len(layer_types)
    for p in range(1, n + 2):
        want = ["sliding_attention" if (i + 1) % p else "full_attention" for i in range(n)]
        if want == layer_types:
            return p
    raise ValueError(
        f"config.json: layer_types {layer_types} is not 'every p-th layer is full attention'"
    )


def _check(hf: dict, key: str, ok: Any) -> None:
    if hf.get(key) not in ok:
        raise ValueError(f"config.json: {key}={hf.get(key)!r} is not supported (supported: {ok})")


def config_kwargs(hf: dict) -> tuple[str, dict[str, Any]]:
    """Parses an HF config dict into (family, ModelConfig keyword arguments)."""
    hf = text_config(hf)
    family = family_of(hf)
    d = {**_DEFAULTS[family], **{k: v for k, v in hf.items() if v is not None}}
    _check_supported(hf, family)
    num_heads = int(d["num_attention_heads"])
    num_layers = int(d["num_hidden_layers"])
    act = _activation(d, family)
    theta, scaling = _rope_params(hf, family, "full_attention")
    kw: dict[str, Any] = {
        "vocab_size": int(d["vocab_size"]),
        "d_model": int(d["hidden_size"]),
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": int(d.get("num_key_value_heads") or num_heads),
        "head_dim": int(d.get("head_dim") or int(d["hidden_size"]) // num_heads),
        "mlp_dim": int(d["intermediate_size"]),
        "mlp_activation": _ACTIVATIONS[act],
        "tie_embeddings": bool(d["tie_word_embeddings"]),
        "rope_theta": theta,
        "rope_scaling": scaling,
        "norm_eps": float(d["rms_norm_eps"]),
        "max_len": int(d.get("max_position_embeddings", 8192)),
    }
    kw.update(_family_kwargs(hf, d, family, num_layers, kw["head_dim"]))
    return family, kw


def _check_supported(hf: dict, family: str) -> None:
    """Refuses config options the model does not implement (biases, bidirectional or
    partial-rotary attention, Qwen sliding windows)."""
    _check(hf, "attention_bias", (None, False) if family != "qwen2" else (None, False, True))
    _check(hf, "mlp_bias", (None, False))
    _check(hf, "use_bidirectional_attention", (None, False))
    _check(hf, "partial_rotary_factor", (None, 1.0))
    if family in ("qwen2", "qwen3"):
        _check(hf, "use_sliding_window", (None, False))


def _activation(d: dict, family: str) -> str:
    """The HF name of the MLP activation (a key of `_ACTIVATIONS`)."""
    act_key = "hidden_activation" if family in ("gemma2", "gemma3") else "hidden_act"
    act = (
        d.get(act_key)
        or d.get("hidden_act")
        or ("gelu_pytorch_tanh" if "gemma" in family else "silu")
    )
    if family == "gemma" and act == "gelu":
        act = "gelu_pytorch_tanh"  # legacy Gemma configs say 'gelu' but mean tanh (as HF does)
    if act not in _ACTIVATIONS:
        raise ValueError(
            f"config.json: {act_key}={act!r} is not supported ({sorted(_ACTIVATIONS)})"
        )
    return act


def _family_kwargs(
    hf: dict, d: dict, family: str, num_layers: int, head_dim: int
) -> dict[str, Any]:
    """The ModelConfig fields one family sets beyond the shared ones (Gemma's norms,
    softcaps and sliding windows, Qwen's q/k/v bias and q/k norm)."""
    kw: dict[str, Any] = {}
    if family.startswith("gemma"):
        kw.update(norm_plus_one=True, scale_embeddings=True)
    if family == "qwen2":
        kw["qkv_bias"] = bool(hf.get("attention_bias", True))  # Qwen2 always has q/k/v bias
    if family in ("gemma3", "qwen3"):
        kw["qk_norm"] = True
    if family in ("gemma2", "gemma3"):
        layer_types = _layer_types(hf, family, num_layers)
        kw.update(
            post_attn_norm=True,
            post_mlp_norm=True,
            query_pre_attn_scalar=float(d.get("query_pre_attn_scalar") or head_dim),
            logit_softcap=d.get("final_logit_softcapping"),
            attn_softcap=d.get("attn_logit_softcapping"),
            sliding_window=int(d["sliding_window"]) if "sliding_attention" in layer_types else None,
            sliding_window_pattern=_pattern(layer_types),
        )
        if family == "gemma3":
            local_theta, local_scaling = _rope_params(hf, family, "sliding_attention")
            if local_scaling is not None:
                raise ValueError("config.json: rope scaling on sliding layers is not supported")
            kw["rope_local_theta"] = local_theta
    elif hf.get("layer_types") and set(hf["layer_types"]) != {"full_attention"}:
        raise ValueError(f"config.json: sliding-window layers are not supported for {family}")
    return kw


def _int_if_whole(x: float | int) -> float | int:
    return int(x) if float(x).is_integer() else x


def hf_config_from(config: Any, family: str, extra: dict | None = None) -> dict:
    """A config.json dict for `config` (a ModelConfig) in the family's HF format.

    Uses the legacy keys (rope_theta / rope_scaling) that every transformers version
    reads; `extra` (e.g. bos/eos ids from the imported config) is merged in first.
    """
    c = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    arch, model_type = EXPORT_NAMES[family]
    out: dict[str, Any] = dict(extra or {})
    act_key = "hidden_activation" if family in ("gemma2", "gemma3") else "hidden_act"
    out.update(
        architectures=[arch],
        model_type=model_type,
        vocab_size=c["vocab_size"],
        hidden_size=c["d_model"],
        num_hidden_layers=c["num_layers"],
        num_attention_heads=c["num_heads"],
        num_key_value_heads=c["num_kv_heads"],
        head_dim=c["head_dim"],
        intermediate_size=c["mlp_dim"],
        tie_word_embeddings=c["tie_embeddings"],
        rms_norm_eps=c["norm_eps"],
        max_position_embeddings=c["max_len"],
        rope_theta=c["rope_theta"],
        # ModelConfig keeps rope_scaling as sorted (key, value) pairs (hashable): a dict here.
        rope_scaling=dict(c["rope_scaling"]) if c.get("rope_scaling") else None,
        torch_dtype="float32",
    )
    out[act_key] = _HF_ACTIVATIONS[c["mlp_activation"]]
    out.pop("rope_parameters", None)
    if family == "qwen2":
        out.setdefault("use_sliding_window", False)
    if family in ("gemma2", "gemma3"):
        n, p = c["num_layers"], c.get("sliding_window_pattern") or 1
        out.update(
            # transformers' strict configs want an int here (it is one in every release)
            query_pre_attn_scalar=_int_if_whole(c["query_pre_attn_scalar"]),
            final_logit_softcapping=c.get("logit_softcap"),
            attn_logit_softcapping=c.get("attn_softcap"),
            sliding_window=c.get("sliding_window") or 4096,
            layer_types=[
                "sliding_attention" if (i + 1) % p and c.get("sliding_window") else "full_attention"
                for i in range(n)
            ],
        )
        if family == "gemma3":
            out["rope_local_base_freq"] = c["rope_local_theta"]
            out["sliding_window_pattern"] = p
    return out

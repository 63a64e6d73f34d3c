"""Import Hugging Face Gemma 1/2/3, Llama 2/3.x and Qwen 2/2.5/3 checkpoints.

`load_config(directory)` parses config.json into a `ModelConfig`
(`hf_config.config_kwargs`); `import_params` maps every HF tensor name to our param path
with the reshape/transpose to our kernel layouts (`param_map`), checks names and shapes,
and streams each tensor from the memory-mapped safetensors straight onto the sharding
of its abstract target, so each device receives only its slice. The mesh-aware entry
point is `rlaif_jax.sharding.model_params.import_hf(directory, mesh, rules)`.

Rotary embeddings: HF Llama/Qwen/Gemma checkpoints use the "rotate_half" convention
(dimension j pairs with j + Dh/2). q/k weights are copied without a permutation, so
our attention must use the same convention (the logits tests check it).

Reward models: `head='scalar'` maps HF `*ForSequenceClassification` `score.weight`
[1, D] to our scalar head (export writes it back the same way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from rlaif_jax.models.importers import safetensors_io as sio
from rlaif_jax.models.importers.hf_config import config_kwargs, text_config
from rlaif_jax.models.importers.tensor_map import ParamMap, Piece, lazy_source

PyTree = Any

# Our param paths, in one place ("{i}" is the layer index). Keep in sync with
# rlaif_jax/models/transformer.py.
PATHS = {
    "embed": ("embedder", "embedding"),  # [V, D]
    "final_norm": ("final_norm", "scale"),  # [D]
    "unembed": ("unembed", "kernel"),  # [D, V]
    "score": ("score_head", "kernel"),  # [D, 1]
    "pre_attn_norm": ("layers_{i}", "pre_attn_norm", "scale"),
    "post_attn_norm": ("layers_{i}", "post_attn_norm", "scale"),
    "pre_mlp_norm": ("layers_{i}", "pre_mlp_norm", "scale"),
    "post_mlp_norm": ("layers_{i}", "post_mlp_norm", "scale"),
    "q": ("layers_{i}", "attn", "q", "kernel"),  # [D, H, Dh]
    "k": ("layers_{i}", "attn", "k", "kernel"),  # [D, K, Dh]
    "v": ("layers_{i}", "attn", "v", "kernel"),  # [D, K, Dh]
    "o": ("layers_{i}", "attn", "o", "kernel"),  # [H, Dh, D]
    "q_bias": ("layers_{i}", "attn", "q", "bias"),  # [H, Dh]
    "k_bias": ("layers_{i}", "attn", "k", "bias"),  # [K, Dh]
    "v_bias": ("layers_{i}", "attn", "v", "bias"),  # [K, Dh]
    "q_norm": ("layers_{i}", "attn", "q_norm", "scale"),  # [Dh]
    "k_norm": ("layers_{i}", "attn", "k_norm", "scale"),  # [Dh]
    "gate": ("layers_{i}", "mlp", "gate", "kernel"),  # [D, F]
    "up": ("layers_{i}", "mlp", "up", "kernel"),  # [D, F]
    "down": ("layers_{i}", "mlp", "down", "kernel"),  # [F, D]
}

# Tensors some checkpoints carry that hold no weights (recomputed buffers).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _path(key: str, i: int | None = None) -> tuple[str, ...]:
    return tuple(p.format(i=i) for p in PATHS[key])


def param_map(
    family: str, kw: Mapping[str, Any], head: str = "lm", prefix: str = "model."
) -> list[ParamMap]:
    """Every one of our params and the HF tensor(s) it comes from, for config `kw`.

    `kw` is a ModelConfig (or its keyword dict); `prefix` is the HF name prefix of the
    decoder ('model.' for *ForCausalLM).
    """
    get = kw.get if isinstance(kw, Mapping) else lambda k, d=None: getattr(kw, k, d)
    d, h, k, dh, f, v = (
        get(n)
        for n in ("d_model", "num_heads", "num_kv_heads", "head_dim", "mlp_dim", "vocab_size")
    )
    gemma2 = family in ("gemma2", "gemma3")
    out: list[ParamMap] = []

    def add(key: str, name: str, shape, reshape=None, perm=None, i=None):
        out.append(ParamMap(_path(key, i), (Piece(name, tuple(shape), reshape, perm),)))

    add("embed", f"{prefix}embed_tokens.weight", (v, d))
    add("final_norm", f"{prefix}norm.weight", (d,))
    for i in range(get("num_layers")):
        p = f"{prefix}layers.{i}."
        add("pre_attn_norm", p + "input_layernorm.weight", (d,), i=i)
        if gemma2:
            add("post_attn_norm", p + "post_attention_layernorm.weight", (d,), i=i)
            add("pre_mlp_norm", p + "pre_feedforward_layernorm.weight", (d,), i=i)
            add("post_mlp_norm", p + "post_feedforward_layernorm.weight", (d,), i=i)
        else:  # Llama/Qwen/Gemma 1 call the pre-MLP norm "post_attention_layernorm"
            add("pre_mlp_norm", p + "post_attention_layernorm.weight", (d,), i=i)
        a = p + "self_attn."
        # Linear weights are [out, in]; ours are [in, ...out] with heads split out.
        add("q", a + "q_proj.weight", (h * dh, d), (h, dh, d), (2, 0, 1), i)
        add("k", a + "k_proj.weight", (k * dh, d), (k, dh, d), (2, 0, 1), i)
        add("v", a + "v_proj.weight", (k * dh, d), (k, dh, d), (2, 0, 1), i)
        add("o", a + "o_proj.weight", (d, h * dh), (d, h, dh), (1, 2, 0), i)
        if get("qkv_bias"):
            add("q_bias", a + "q_proj.bias", (h * dh,), (h, dh), None, i)
            add("k_bias", a + "k_proj.bias", (k * dh,), (k, dh), None, i)
            add("v_bias", a + "v_proj.bias", (k * dh,), (k, dh), None, i)
        if get("qk_norm"):
            add("q_norm", a + "q_norm.weight", (dh,), i=i)
            add("k_norm", a + "k_norm.weight", (dh,), i=i)
        m = p + "mlp."
        add("gate", m + "gate_proj.weight", (f, d), None, (1, 0), i)
        add("up", m + "up_proj.weight", (f, d), None, (1, 0), i)
        add("down", m + "down_proj.weight", (d, f), None, (1, 0), i)
    if head == "scalar":
        add("score", "score.weight", (1, d), None, (1, 0))
    elif not get("tie_embeddings"):
        add("unembed", "lm_head.weight", (v, d), None, (1, 0))
    return out


def _prefix(names: set[str], hf: dict) -> str:
    """The decoder's name prefix: 'model.' or, in multimodal Gemma 3, the language model's."""
    if hf.get("model_type") == "gemma3":
        for p in ("model.language_model.", "language_model.model."):
            if any(n.startswith(p) for n in names):
                return p
    return "model."


def _tree_from_paths(items: Mapping[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, value in items.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return tree


def _flat(tree: PyTree) -> dict[tuple[str, ...], Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(getattr(k, "key", str(k)) for k in path): leaf for path, leaf in flat}


def check_names(ckpt_names: set[str], maps: list[ParamMap], where: str, ignore_prefixes=()) -> None:
    """Raises CheckpointError listing missing and unexpected tensors."""
    wanted = {p.hf_name for m in maps for p in m.pieces}
    tied_head = {"lm_head.weight"} if "lm_head.weight" not in wanted else set()
    extra = sorted(
        n
        for n in ckpt_names - wanted - tied_head
        if not n.endswith(_IGNORED_SUFFIXES) and not n.startswith(tuple(ignore_prefixes))
    )
    missing = sorted(wanted - ckpt_names)
    if missing or extra:
        raise sio.CheckpointError(
            f"{where}: tensors do not match the model built from its config.json"
            + (f"; missing: {missing}" if missing else "")
            + (f"; unexpected: {extra}" if extra else "")
        )


def load_params(ckpt: sio.Checkpoint, maps: list[ParamMap], abstract: PyTree) -> PyTree:
    """Streams every mapped tensor onto the sharding/dtype of `abstract` (ShapeDtypeStructs).

    Checks that the mapped paths are exactly the model's params and that every HF
    tensor has the expected shape.
    """
    targets = _flat(abstract)
    by_path = {m.path: m for m in maps}
    if set(by_path) != set(targets):
        raise ValueError(
            f"{ckpt.directory}: importer/model param mismatch; model-only: "
            f"{sorted(set(targets) - set(by_path))}; importer-only: {sorted(set(by_path) - set(targets))}"
        )
    bad = []
    for m in maps:
        for p in m.pieces:
            info = ckpt.info(p.hf_name)
            if info.shape != p.hf_shape:
                bad.append(
                    f"{p.hf_name} in {info.path}: shape {list(info.shape)}, expected {list(p.hf_shape)}"
                )
            if info.dtype.kind not in "f" and info.dtype.name != "bfloat16":
                bad.append(f"{p.hf_name} in {info.path}: dtype {info.dtype} is not a float type")
        if m.ours_shape() != tuple(targets[m.path].shape):
            bad.append(
                f"{'/'.join(m.path)}: mapped shape {m.ours_shape()}, model has {targets[m.path].shape}"
            )
    if bad:
        raise sio.CheckpointError(f"{ckpt.directory}: mismatched tensors: " + "; ".join(bad))
    out = {}
    for m in maps:
        t = targets[m.path]
        src = lazy_source(m, [ckpt.tensor(p.hf_name) for p in m.pieces])
        out[m.path] = sio.to_device(src, t.sharding, t.dtype)
    return _tree_from_paths(out)


def load_config(directory: str, **overrides: Any):
    """(family, ModelConfig) from `directory`/config.json; `overrides` replace fields
    (e.g. dtype='bfloat16', max_len=2048, remat=True)."""
    from rlaif_jax.models.config import ModelConfig

    with sio.Checkpoint(directory) as ckpt:
        family, kw = config_kwargs(ckpt.config)
    kw.update(overrides)
    return family, ModelConfig(**kw)


def import_params(
    directory: str, family: str, config: Any, abstract: PyTree, head: str = "lm"
) -> PyTree:
    """Streams the HF-layout checkpoint in `directory` onto `abstract`.

    family, config: what `load_config(directory)` returned (possibly with overrides);
    abstract: the model's param tree for `config`/`head` as ShapeDtypeStructs carrying
    each leaf's sharding and dtype (`sharding.model_params.abstract_params`); each device
    reads only its slice from the memory-mapped files. Raises CheckpointError naming
    missing, unexpected or mis-shaped tensors and their files.
    """
    with sio.Checkpoint(directory) as ckpt:
        names = set(ckpt.names)
        prefix = _prefix(names, ckpt.config)
        maps = param_map(family, config, head, prefix)
        ignore = (
            (
                "vision_tower.",
                "multi_modal_projector.",
                "model.vision_tower.",
                "model.multi_modal_projector.",
            )
            if text_config(ckpt.config) is not ckpt.config
            else ()
        )
        if head == "scalar":
            ignore += ("lm_head.",)
        check_names(names, maps, directory, ignore)
        return load_params(ckpt, maps, abstract)

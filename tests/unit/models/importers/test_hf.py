"""models/importers/hf.py (with hf_config.py): HF checkpoint import against
transformers (PyTorch CPU, float32, tiny models).

For each family a tiny random transformers model is saved with `save_pretrained`;
import -> export must reproduce its tensors bit-exactly and transformers must load the
export to the same logits; with our Transformer, imported params must give
transformers' logits (padded batches included).
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (CPU) is needed to build reference models")
transformers = pytest.importorskip("transformers", reason="transformers builds reference models")

from rlaif_jax.models.importers import hf as hf_import  # noqa: E402
from rlaif_jax.models.importers import safetensors_io as sio  # noqa: E402
from rlaif_jax.models.importers.export import export_hf  # noqa: E402
from rlaif_jax.models.importers.hf_config import config_kwargs  # noqa: E402
from rlaif_jax.sharding.mesh import make_mesh  # noqa: E402
from tests.unit.models.importers._helpers import (  # noqa: E402
    COMMON,
    FAMILIES,
    D,
    F,
    V,
    _abstract_from_maps,
    _tensors,
    _tiny_hf,
)


def _hf_logits(model, tokens, mask=None, positions=None) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens),
            attention_mask=None if mask is None else torch.tensor(mask.astype(np.int64)),
            position_ids=None if positions is None else torch.tensor(positions),
        )
    return out.logits.float().numpy()


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

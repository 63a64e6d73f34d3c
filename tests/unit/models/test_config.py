"""models/config.py: parameter counts match the parameter tree, preset sizes and FLOPs,
registering presets."""

import jax
import numpy as np
import pytest

import rlaif_jax.toy.presets  # noqa: F401  (registers 'toy_policy')
from rlaif_jax.models import config as config_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules


@pytest.mark.parametrize("name", ["tiny", "toy_policy", "gemma2_2b", "qwen2p5_1p5b"])
def test_num_params_matches_param_tree(name):
    config = config_lib.get_config(name)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    for head in ("lm", "scalar"):
        structs, _ = model_params.abstract_params(config, mesh, get_rules("dp"), head)
        count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(structs))
        assert count == config_lib.num_params(config, head)


def test_preset_sizes():
    assert config_lib.num_params(config_lib.get_config("bench_1b")) == 953_223_168
    assert round(config_lib.num_params(config_lib.get_config("llama3_8b")) / 1e9, 2) == 8.03
    c = config_lib.get_config("bench_1b")
    n_matmul = config_lib.num_params(c) - c.vocab_size * c.d_model
    want = 6 * n_matmul + 6 * c.num_layers * c.num_heads * c.head_dim * 1024
    assert config_lib.flops_per_token(c, 1024) == want
    with pytest.raises(ValueError, match="Unknown model preset .nope.; presets"):
        config_lib.get_config("nope")
    with pytest.raises(ValueError, match="num_kv_heads"):
        config_lib.get_config("tiny", num_kv_heads=3)


def test_register_preset():
    fields = dict(config_lib.PRESETS["tiny"], d_model=32, head_dim=8)
    config_lib.register_preset("test_small", fields)
    config_lib.register_preset("test_small", dict(fields))  # same fields again: a no-op
    assert config_lib.get_config("test_small").d_model == 32
    with pytest.raises(ValueError, match="different preset"):
        config_lib.register_preset("test_small", {**fields, "d_model": 48})
    with pytest.raises(ValueError, match="unknown ModelConfig fields.*d_modle"):
        config_lib.register_preset("test_typo", {**fields, "d_modle": 48})
    assert "test_typo" not in config_lib.PRESETS
    del config_lib.PRESETS["test_small"]

"""Model core: KV-cache decoding == full forward, family options, heads, param counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlaif_jax.toy.presets  # noqa: F401  (registers 'toy_policy')
from rlaif_jax.models import config as config_lib
from rlaif_jax.models import model as model_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

# Jitted once per (config, head, shapes): eager op-by-op dispatch is slow on 2 cores.
apply = jax.jit(model_lib.apply, static_argnums=0, static_argnames="head")

# Every family option on at once (Gemma2/3 + Qwen + Llama-3 rope scaling), tiny shapes.
FAMILY = dict(
    mlp_activation="gelu_tanh",
    tie_embeddings=True,
    norm_plus_one=True,
    scale_embeddings=True,
    post_attn_norm=True,
    post_mlp_norm=True,
    query_pre_attn_scalar=24.0,
    logit_softcap=30.0,
    attn_softcap=50.0,
    sliding_window=3,
    sliding_window_pattern=2,
    rope_local_theta=100.0,
    qk_norm=True,
    qkv_bias=True,
    rope_scaling=dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=16,
    ),
)


def _params(config, head="lm", seed=0):
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    params, _ = model_params.init_params(
        config, jax.random.PRNGKey(seed), mesh, get_rules("dp"), head
    )
    # Random (not zero/one) norms and biases so every option changes the numbers.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


@pytest.mark.parametrize("overrides", [{}, FAMILY], ids=["llama", "gemma_qwen_options"])
def test_kv_cache_decoding_equals_full_forward(overrides):
    """Right-padded prompts of different lengths prefilled into a cache, then one token per
    step at a shared slot (per-row positions): logits == full forward over each row's
    contiguous sequence, step by step."""
    config = config_lib.get_config("tiny", **overrides)
    params = _params(config)
    rng = np.random.default_rng(0)
    lengths = np.array([5, 2, 7], np.int32)
    b, lp, steps = 3, 7, 6
    seqs = rng.integers(3, config.vocab_size, (b, lp + steps)).astype(np.int32)
    prompt = np.where(np.arange(lp)[None] < lengths[:, None], seqs[:, :lp], 0)
    slots = lp + steps
    slot_ids = np.arange(slots)[None]
    cache = model_lib.init_cache(config, b, slots)
    logits, cache = apply(
        config,
        params,
        jnp.asarray(prompt),
        attention_mask=jnp.asarray(slot_ids < lengths[:, None]),
        cache=cache,
        cache_index=0,
        logits_positions=jnp.asarray(lengths - 1),
    )
    full, _ = apply(config, params, jnp.asarray(seqs))
    for t in range(steps):
        # The token at sequence position lengths + t, taken from each row's own sequence.
        want_pos = lengths + t - 1  # logits predicting position lengths + t
        want = np.asarray(full)[np.arange(b), want_pos]
        np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5, rtol=1e-5)
        tok = seqs[np.arange(b), lengths + t]
        valid = (slot_ids < lengths[:, None]) | ((slot_ids >= lp) & (slot_ids <= lp + t))
        logits, cache = apply(
            config,
            params,
            jnp.asarray(tok[:, None]),
            positions=jnp.asarray((lengths + t)[:, None]),
            attention_mask=jnp.asarray(valid),
            cache=cache,
            cache_index=lp + t,
            logits_positions=jnp.zeros((b,), jnp.int32),
        )


def test_padding_does_not_change_real_positions():
    """Right padding (masked keys) leaves the logits of real tokens unchanged."""
    config = config_lib.get_config("tiny")
    params = _params(config)
    toks = jnp.asarray(np.random.default_rng(1).integers(3, 256, (1, 6)), jnp.int32)
    short, _ = apply(config, params, toks[:, :4])
    padded = jnp.concatenate([toks[:, :4], jnp.zeros((1, 2), jnp.int32)], axis=1)
    mask = jnp.arange(6)[None] < 4
    long, _ = apply(config, params, padded, attention_mask=mask)
    np.testing.assert_allclose(long[:, :4], short, atol=1e-5)


def test_logits_positions_and_scalar_head():
    config = config_lib.get_config("tiny")
    params = _params(config)
    toks = jnp.asarray(np.random.default_rng(2).integers(3, 256, (2, 5)), jnp.int32)
    full, _ = apply(config, params, toks)
    assert full.shape == (2, 5, 256) and full.dtype == jnp.float32
    at, _ = apply(config, params, toks, logits_positions=jnp.array([4, 1]))
    np.testing.assert_allclose(at, full[jnp.arange(2), jnp.array([4, 1])], atol=1e-6)

    scalar = _params(config, head="scalar", seed=3)
    assert "score_head" in scalar and "unembed" not in scalar
    values, _ = apply(config, scalar, toks, head="scalar")
    assert values.shape == (2, 5) and values.dtype == jnp.float32
    copied = model_lib.lm_to_scalar_params(params, scalar)
    assert jax.tree.structure(copied) == jax.tree.structure(scalar)
    np.testing.assert_array_equal(
        copied["layers_0"]["attn"]["q"]["kernel"], params["layers_0"]["attn"]["q"]["kernel"]
    )
    np.testing.assert_array_equal(copied["score_head"]["kernel"], scalar["score_head"]["kernel"])


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


def test_grow_depth_starts_as_the_shallow_model_and_can_learn():
    shallow_cfg = config_lib.get_config("tiny")
    deep_cfg = shallow_cfg.replace(num_layers=shallow_cfg.num_layers + 2)
    shallow, deep = _params(shallow_cfg, seed=1), _params(deep_cfg, seed=2)
    grown = model_lib.grow_depth(shallow, deep)
    assert jax.tree.structure(grown) == jax.tree.structure(deep)
    toks = jnp.array([[1, 5, 9, 2, 7], [3, 3, 8, 1, 4]], jnp.int32)
    want, _ = apply(shallow_cfg, shallow, toks)
    got, _ = apply(deep_cfg, grown, toks)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    top = grown[f"layers_{deep_cfg.num_layers - 1}"]
    assert not np.any(np.asarray(top["mlp"]["down"]["kernel"]))
    # The new blocks are not dead: the loss has a gradient on their zeroed writers.
    loss = lambda p: jnp.mean(apply(deep_cfg, p, toks)[0] ** 2)  # noqa: E731
    g = jax.grad(loss)(grown)[f"layers_{deep_cfg.num_layers - 1}"]
    assert np.any(np.asarray(g["mlp"]["down"]["kernel"]))
    with pytest.raises(ValueError, match="cannot grow"):
        model_lib.grow_depth(deep, shallow)

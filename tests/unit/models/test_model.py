"""models/model.py: KV-cache decoding == full forward, family options, heads, padding,
growing depth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.models import config as config_lib
from rlaif_jax.models import model as model_lib
from tests.unit.models._helpers import _params, apply

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

"""models/layers.py: the fused-attention path ('dpa') gives the einsum path's numbers; RoPE's
gathered tables equal the directly computed ones."""

import jax
import jax.numpy as jnp
import numpy as np

from rlaif_jax.models import config as config_lib
from tests.unit.models._helpers import _params, apply


def test_fused_attention_path_matches_einsum():
    """attention_impl 'dpa' (jax.nn.dot_product_attention with per-row lengths, the code
    path 'cudnn' takes on GPU) == the einsum path at real tokens, and in the sampler."""
    from rlaif_jax.decoding import sample as sample_lib

    base = config_lib.get_config("tiny")
    fused = base.replace(attention_impl="dpa")
    params = _params(base)
    toks = jnp.asarray(np.random.default_rng(5).integers(3, 256, (3, 7)), jnp.int32)
    lengths = np.array([7, 3, 5])
    mask = jnp.asarray(np.arange(7)[None] < lengths[:, None])
    want, _ = apply(base, params, toks, attention_mask=mask)
    got, _ = apply(fused, params, toks, attention_mask=mask)
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=1e-5)
    kw = dict(max_new_tokens=3, temperature=0.0, eos_id=1)
    a = sample_lib.sample(base, params, toks, lengths, jax.random.PRNGKey(0), **kw)
    b = sample_lib.sample(fused, params, toks, lengths, jax.random.PRNGKey(0), **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_rope_tables_gathered_equal_direct():
    """RoPE's table gathered by position (training, scoring, prefill) equals sin / cos
    computed at each position (decode steps), bit for bit; a position beyond the bound
    reads NaN instead of a wrong angle."""
    from rlaif_jax.models import layers

    config = config_lib.get_config("tiny")
    positions = jnp.asarray([[0, 1, 2, 3], [5, 2, 7, 0]], jnp.int32)
    direct = layers.rope_tables(config, positions, True)
    gathered = layers.rope_tables(config, positions, True, num_positions=8)
    for d, g in zip(direct, gathered):
        assert g.shape == (2, 4, config.head_dim // 2)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(d))
    beyond = np.asarray(layers.rope_tables(config, positions, True, num_positions=6)[0])
    assert np.isnan(beyond[1, 2]).all() and np.isfinite(beyond[0]).all()

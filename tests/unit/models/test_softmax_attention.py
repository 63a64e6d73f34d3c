"""models/softmax_attention.py (attention with its backward written out) against a NumPy
reference and against autodiff of the einsum path; models/layers.rope_tables' gathered
table against the angles computed per position."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.models import config as config_lib
from rlaif_jax.models import layers
from rlaif_jax.models.softmax_attention import softmax_attention


def _numpy_attention(q, k, v, mask):
    """float64 reference: q [B, L, H, Dh], k, v [B, S, K, Dh], mask [B, L, S]."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    g = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)  # head h reads kv head h // G
    scores = np.einsum("blhd,bshd->bhls", q, k)
    scores = np.where(np.asarray(mask)[:, None], scores, -np.inf)
    scores -= scores.max(-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhls,bshd->blhd", p, v)


def _einsum_attention(q, k, v, mask):
    """The einsum path (`layers.attend` with a KV-cache layout), in [B, S, K, Dh]."""
    return layers.attend(
        q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask, heads_first=True
    )


def _inputs(b, length, s, h, kv, dh, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 5)
    q = jax.random.normal(ks[0], (b, length, h, dh)).astype(dtype)
    k = jax.random.normal(ks[1], (b, s, kv, dh)).astype(dtype)
    v = jax.random.normal(ks[2], (b, s, kv, dh)).astype(dtype)
    mask = jax.random.bernoulli(ks[3], 0.7, (b, length, s)).at[:, :, 0].set(True)
    ct = jax.random.normal(ks[4], (b, length, h, dh))
    return q, k, v, mask, ct


SHAPES = [  # (B, L, S, H, K, Dh): MHA, GQA, MQA, L != S, tiny dims
    (2, 5, 5, 2, 2, 8),
    (2, 5, 7, 4, 2, 8),
    (3, 16, 16, 6, 1, 4),
    (1, 3, 9, 2, 1, 16),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_values_match_numpy(shape):
    q, k, v, mask, _ = _inputs(*shape)
    got = softmax_attention(q, k, v, mask)
    np.testing.assert_allclose(got, _numpy_attention(q, k, v, mask), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_autodiff_of_the_einsum_path(shape):
    q, k, v, mask, ct = _inputs(*shape)

    def loss(fn):
        return lambda q, k, v: (fn(q, k, v, mask) * ct).sum()

    got = jax.grad(loss(softmax_attention), (0, 1, 2))(q, k, v)
    want = jax.grad(loss(_einsum_attention), (0, 1, 2))(q, k, v)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def test_fully_masked_query_rows_match_the_einsum_path():
    """A padded query row sees no key: both paths give it the same uniform average."""
    q, k, v, mask, ct = _inputs(2, 4, 4, 2, 1, 8)
    mask = mask.at[1, 3].set(False)
    np.testing.assert_allclose(
        softmax_attention(q, k, v, mask), _einsum_attention(q, k, v, mask), atol=1e-6
    )


def test_bfloat16_runs_and_stays_close_to_float32():
    """Compute dtype bfloat16 (scores and softmax in float32, P·V in bf16): the dots are
    forms XLA CPU runs at tiny head dims too, and the result tracks float32's."""
    q, k, v, mask, ct = _inputs(2, 5, 7, 4, 2, 8)
    bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]

    def loss(q, k, v):
        return (softmax_attention(q, k, v, mask).astype(jnp.float32) * ct).sum()

    out = softmax_attention(*bf, mask)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), softmax_attention(q, k, v, mask), atol=0.05)
    for g, w in zip(jax.grad(loss, (0, 1, 2))(*bf), jax.grad(loss, (0, 1, 2))(q, k, v)):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(g.astype(jnp.float32), w, atol=0.1)


def test_rope_tables_gathered_equal_direct():
    """The table gathered by position equals sin/cos computed at each position, bit for
    bit; a position beyond the bound reads NaN instead of a wrong angle."""
    config = config_lib.get_config("tiny")
    positions = jnp.asarray([[0, 1, 2, 3], [5, 2, 7, 0]], jnp.int32)
    direct = layers.rope_tables(config, positions, True)
    gathered = layers.rope_tables(config, positions, True, num_positions=8)
    for d, g in zip(direct, gathered):
        assert g.shape == (2, 4, config.head_dim // 2)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(d))
    beyond = layers.rope_tables(config, positions, True, num_positions=6)[0]
    assert np.isnan(np.asarray(beyond)[1, 2]).all() and np.isfinite(np.asarray(beyond)[0]).all()

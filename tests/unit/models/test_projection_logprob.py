"""The model's hand-written backward passes equal autodiff's: `project` (every weight
matmul) and `token_logprobs` (every loss's log-probability)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.models.logprob import picked_logprobs, token_logprobs
from rlaif_jax.models.projection import project


def _rand(key, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.PRNGKey(key), shape, dtype)


@pytest.mark.parametrize(
    "x_shape, k_shape, n, spec",
    [
        ((2, 5, 8), (8, 6), 1, "bld,df->blf"),  # gate / up / down
        ((2, 5, 8), (8, 3, 4), 1, "bld,dhe->blhe"),  # q / k / v
        ((2, 5, 3, 4), (3, 4, 8), 2, "blhe,hed->bld"),  # o
        ((7, 8), (8, 11), 1, "nd,dv->nv"),  # unembedding of gathered positions
    ],
)
def test_project_matches_einsum_and_its_autodiff(x_shape, k_shape, n, spec):
    x, k = _rand(0, x_shape), _rand(1, k_shape)
    out_ct = _rand(2, jnp.einsum(spec, x, k).shape)

    def ours(x, k):
        return (project(x, k, n) * out_ct).sum()

    def reference(x, k):
        return (jnp.einsum(spec, x, k) * out_ct).sum()

    np.testing.assert_allclose(project(x, k, n), jnp.einsum(spec, x, k), rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.grad(ours, (0, 1))(x, k), jax.grad(reference, (0, 1))(x, k)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_project_out_dtype_and_gradient_dtypes():
    """bf16 activations and kernel with float32 logits: the result is float32 and each
    gradient comes back in its input's dtype, as autodiff of the einsum gives them."""
    x, k = _rand(0, (2, 3, 8), jnp.bfloat16), _rand(1, (8, 16), jnp.bfloat16)
    out = project(x, k, 1, jnp.float32)
    assert out.dtype == jnp.float32
    ref = jnp.einsum("bld,dv->blv", x, k, preferred_element_type=jnp.float32)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    ct = _rand(2, out.shape)
    gx, gk = jax.grad(lambda x, k: (project(x, k, 1, jnp.float32) * ct).sum(), (0, 1))(x, k)
    rx, rk = jax.grad(
        lambda x, k: (
            jnp.einsum("bld,dv->blv", x, k, preferred_element_type=jnp.float32) * ct
        ).sum(),
        (0, 1),
    )(x, k)
    assert (gx.dtype, gk.dtype) == (jnp.bfloat16, jnp.bfloat16)
    np.testing.assert_allclose(gx.astype(np.float32), rx.astype(np.float32), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(gk.astype(np.float32), rk.astype(np.float32), rtol=2e-2, atol=2e-2)


def test_project_under_jit_vmap_and_remat():
    x, k = _rand(0, (3, 2, 4, 8)), _rand(1, (8, 5))
    f = jax.jit(jax.vmap(jax.checkpoint(lambda x: project(x, k).sum())))
    np.testing.assert_allclose(f(x), jnp.einsum("nbld,df->n", x, k), rtol=1e-5, atol=1e-4)
    g = jax.grad(lambda k: jax.checkpoint(lambda k: project(x, k))(k).sum())(k)
    np.testing.assert_allclose(g, jax.grad(lambda k: (x @ k).sum())(k), rtol=1e-5, atol=1e-4)


def _numpy_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_token_logprobs_values_and_gradient():
    logits = _rand(0, (2, 5, 13)) * 4.0
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 13)
    weights = _rand(2, (2, 5))
    want = np.take_along_axis(
        _numpy_log_softmax(np.asarray(logits)), np.asarray(tokens)[..., None], -1
    )[..., 0]
    np.testing.assert_allclose(token_logprobs(logits, tokens), want, rtol=1e-6, atol=1e-6)

    def reference(lg):
        lp = jax.nn.log_softmax(lg, axis=-1)
        return (jnp.take_along_axis(lp, tokens[..., None], -1)[..., 0] * weights).sum()

    got = jax.grad(lambda lg: (token_logprobs(lg, tokens) * weights).sum())(logits)
    np.testing.assert_allclose(got, jax.grad(reference)(logits), rtol=1e-5, atol=1e-6)
    # NumPy: d/dlogits of w·log p(t) = w·(onehot(t) − softmax).
    p = np.exp(_numpy_log_softmax(np.asarray(logits)))
    onehot = np.eye(13)[np.asarray(tokens)]
    np.testing.assert_allclose(got, np.asarray(weights)[..., None] * (onehot - p), atol=1e-6)


def test_token_logprobs_bf16_logits_and_extreme_values():
    logits = (_rand(0, (3, 7)) * 50.0).astype(jnp.bfloat16)
    tokens = jnp.array([0, 3, 6])
    got = token_logprobs(logits, tokens)
    assert got.dtype == jnp.float32
    ref = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)), tokens[:, None], -1)[
        :, 0
    ]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)
    g = jax.grad(lambda lg: token_logprobs(lg, tokens).sum())(logits)
    assert g.dtype == jnp.bfloat16 and bool(jnp.isfinite(g.astype(jnp.float32)).all())


def test_picked_logprobs_two_targets_share_one_normaliser():
    """K tokens per row (SFT's two-token soft targets): values and gradients of the
    weighted sum equal autodiff of log_softmax picked at each."""
    logits = _rand(0, (2, 4, 11)) * 3.0
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 4, 2), 0, 11)
    weights = _rand(2, (2, 4, 2))

    def reference(lg):
        lp = jax.nn.log_softmax(lg, axis=-1)
        return (jnp.take_along_axis(lp, tokens, -1) * weights).sum()

    got = picked_logprobs(logits, tokens)
    want = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), tokens, -1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    grad = jax.grad(lambda lg: (picked_logprobs(lg, tokens) * weights).sum())(logits)
    np.testing.assert_allclose(grad, jax.grad(reference)(logits), rtol=1e-5, atol=1e-6)

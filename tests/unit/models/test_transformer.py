"""models/transformer.py: remat policies give the gradients of no remat."""

import jax
import jax.numpy as jnp
import numpy as np

from rlaif_jax.models import config as config_lib
from rlaif_jax.models import model as model_lib
from tests.unit.models._helpers import _params


def test_remat_matches_no_remat():
    base = config_lib.get_config("tiny")
    params = _params(base)
    toks = jnp.asarray(np.random.default_rng(4).integers(3, 256, (2, 6)), jnp.int32)

    def loss(p, config):
        return jnp.mean(model_lib.apply(config, p, toks)[0] ** 2)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    want = grad(params, base)
    for policy in ("full", "dots"):
        got = grad(params, base.replace(remat=policy))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _saved_residuals(config, params, toks, capsys) -> list[str]:
    def loss(p):
        return jnp.mean(model_lib.apply(config, p, toks)[0] ** 2)

    capsys.readouterr()
    jax.ad_checkpoint.print_saved_residuals(loss, params)
    return capsys.readouterr().out.strip().splitlines()


def test_dots_policy_saves_the_projection_outputs(capsys):
    """remat='dots' keeps the weight matmuls' outputs that the backward reads (at least
    q, k, v, gate and up per layer; `project` is a custom-VJP call, which
    `checkpoint_dots_*` alone would not see), and 'full' keeps none of them."""
    base = config_lib.get_config("tiny")
    params = _params(base)
    toks = jnp.asarray(np.random.default_rng(4).integers(3, 256, (2, 6)), jnp.int32)
    dots = _saved_residuals(base.replace(remat="dots"), params, toks, capsys)
    full = _saved_residuals(base.replace(remat="full"), params, toks, capsys)
    named = [line for line in dots if "named 'projection'" in line]
    assert len(named) >= 5 * base.num_layers
    assert not [line for line in full if "named 'projection'" in line]

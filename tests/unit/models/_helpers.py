"""The model tests' jitted apply and randomised parameters."""

import jax

from rlaif_jax.models import model as model_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

# Jitted once per (config, head, shapes): eager op-by-op dispatch is slow on 2 cores.
apply = jax.jit(model_lib.apply, static_argnums=0, static_argnames="head")


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

"""models/lora.py: adapters as a separate tree that shards like its kernels; zero b is the
base model bit for bit; the factored forward equals the merged kernels; merge is
W + (alpha/r)·a·b per target kernel (NumPy)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.models import lora
from rlaif_jax.models import model as model_lib
from rlaif_jax.models.config import get_config
from rlaif_jax.models.transformer import Transformer
from rlaif_jax.sharding import partition
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules
from tests.unit.models.test_model import FAMILY

CONFIG = get_config("tiny", vocab_size=64, d_model=32, head_dim=8, mlp_dim=48, num_layers=2)
# Every family option (Gemma 2/3, Qwen, Llama-3 rope scaling) around the projections, and
# remat.
OPTIONS = CONFIG.replace(**FAMILY, remat="full")
LORA = lora.LoRAConfig(rank=4, alpha=8.0)


@functools.cache
def _base(config, head="lm"):
    """Random params with random (not zero/one) norms and biases, in one jitted program;
    a scalar-head tree is the LM's trunk under a random head."""
    if head == "scalar":
        lm = _base(config)
        head = {"kernel": jax.random.normal(jax.random.PRNGKey(9), (config.d_model, 1))}
        return model_lib.lm_to_scalar_params(lm, {"score_head": head})

    @jax.jit
    def make(rng):
        params = nn.unbox(model_lib.init_fn(config, head)(rng))
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.fold_in(rng, 1), len(leaves))
        leaves = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        return jax.tree.unflatten(tree, leaves)

    return make(jax.random.PRNGKey(0))


@functools.cache
def _adapters(config, cfg=LORA, seed=1, b_scale=0.0):
    """Adapters of `config` (b = 0), every leaf moved by b_scale·N(0, 1) when given; one
    jitted program (eager per-leaf ops are slow on 2 cores)."""

    @jax.jit
    def make(rng):
        ad = nn.unbox(lora.init_fn(config, cfg)(rng))
        leaves, tree = jax.tree.flatten(ad)
        keys = jax.random.split(jax.random.fold_in(rng, 7), len(leaves))
        leaves = [x + b_scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        return jax.tree.unflatten(tree, leaves)

    return make(jax.random.PRNGKey(seed))


@jax.jit
def _tokens():
    return jax.random.randint(jax.random.PRNGKey(5), (2, 9), 0, CONFIG.vocab_size)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _both(config, head, params, adapters, tokens):
    """(base output, adapted output) of the same tokens."""
    model = Transformer(config, head)
    return (
        model.apply({"params": params}, tokens)[0],
        model.apply(lora.variables(params, adapters, LORA), tokens)[0],
    )


@pytest.mark.parametrize(
    "config,head", [(CONFIG, "lm"), (OPTIONS, "scalar")], ids=["llama-lm", "options-scalar"]
)
def test_zero_b_is_the_base_model_exactly(config, head):
    params = _base(config, head)
    ad = _adapters(config)
    assert all(not np.any(np.asarray(ab["b"])) for ab in _pairs(ad))  # b starts at zero
    assert all(np.any(np.asarray(ab["a"])) for ab in _pairs(ad))
    base, adapted = _both(config, head, params, ad, _tokens())
    np.testing.assert_array_equal(np.asarray(adapted), np.asarray(base))


def test_factored_forward_equals_the_merged_kernels():
    params = _base(OPTIONS)
    ad = _adapters(OPTIONS, b_scale=0.3)

    @jax.jit
    def three(p, a, t):
        def run(variables):
            return Transformer(OPTIONS).apply(variables, t)[0]

        merged = lora.merge(p, a, LORA)
        return run({"params": p}), run(lora.variables(p, a, LORA)), run({"params": merged})

    base, adapted, merged = (np.asarray(x) for x in three(params, ad, _tokens()))
    assert np.abs(adapted - base).max() > 0.1  # the adapters matter
    np.testing.assert_allclose(adapted, merged, rtol=1e-5, atol=1e-5)


def test_merge_is_base_plus_scaled_ab_per_target_kernel():
    params = _base(CONFIG)
    cfg = lora.LoRAConfig(rank=3, alpha=5.0, targets=("q", "o", "down"))
    ad = _adapters(CONFIG, cfg, b_scale=0.5)
    merged = jax.device_get(jax.jit(lambda p, a: lora.merge(p, a, cfg))(params, ad))
    base = jax.device_get(params)
    adapted = set()
    for layer in ("layers_0", "layers_1"):
        for parent, name in (("attn", "q"), ("attn", "o"), ("mlp", "down")):
            w = np.asarray(base[layer][parent][name]["kernel"], np.float64)
            a = np.asarray(ad[layer][parent][name]["a"], np.float64)
            b = np.asarray(ad[layer][parent][name]["b"], np.float64)
            ab = a.reshape(-1, 3) @ b.reshape(3, -1)
            want = w + (5.0 / 3) * ab.reshape(w.shape)
            got = merged[layer][parent][name]["kernel"]
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            adapted.add((layer, parent, name))
    # Every other leaf is the base's own value.
    for path, leaf in jax.tree_util.tree_leaves_with_path(base):
        key = tuple(p.key for p in path)
        if key[:3] not in adapted:
            np.testing.assert_array_equal(_get(merged, key), leaf)
    assert {(k, p, t) for k, m in ad.items() for p, ps in m.items() for t in ps} == adapted


def test_targets_pick_the_projections_and_shapes_follow_the_kernels():
    cfg = lora.LoRAConfig(rank=2, alpha=2.0, targets=["v", "gate"])
    ad = _adapters(CONFIG, cfg)
    assert set(ad) == {"layers_0", "layers_1"}
    assert jax.tree.map(lambda x: x.shape, ad["layers_0"]) == {
        "attn": {"v": {"a": (32, 2), "b": (2, 2, 8)}},
        "mlp": {"gate": {"a": (32, 2), "b": (2, 48)}},
    }
    full = _adapters(CONFIG)["layers_1"]
    assert full["attn"]["o"]["a"].shape == (4, 8, 4)  # o's input dims are (H, Dh)
    assert full["attn"]["o"]["b"].shape == (4, 32)
    # rank * (in + out) per target, far below the kernels' size.
    per_layer = 4 * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 2 * (32 + 48) + (48 + 32))
    assert lora.num_params(_adapters(CONFIG)) == 2 * per_layer


def test_adapters_shard_like_their_kernels():
    """Under fsdp_tp on a (2, 2, 2) mesh: a takes the kernel's input-dim spec, b its
    output-dim spec, the rank dim is replicated."""
    mesh = make_mesh(2, 2, 2)
    rules = get_rules("fsdp_tp")
    config = CONFIG  # K = 2 kv heads split over tensor = 2
    _, kernels = partition.abstract_params(
        model_lib.init_fn(config), mesh, rules, jax.random.PRNGKey(0)
    )
    ad, shardings = partition.init_sharded(
        lora.init_fn(config, LORA), mesh, rules, jax.random.PRNGKey(1)
    )
    for name, (parent, n_in) in lora.TARGETS.items():
        spec = tuple(kernels["layers_0"][parent][name]["kernel"].spec)
        spec += (None,) * (3 - len(spec))
        kshape = ad["layers_0"][parent][name]
        ndim = kshape["a"].ndim - 1 + kshape["b"].ndim - 1
        spec = spec[:ndim]
        a_spec = tuple(shardings["layers_0"][parent][name]["a"].spec)
        b_spec = tuple(shardings["layers_0"][parent][name]["b"].spec)
        assert _pad(a_spec, n_in + 1) == (*spec[:n_in], None), name
        assert _pad(b_spec, ndim - n_in + 1) == (None, *spec[n_in:]), name
        assert (
            ad["layers_0"][parent][name]["a"].sharding.spec
            == shardings["layers_0"][parent][name]["a"].spec
        )
    assert any(s is not None for s in a_spec + b_spec)  # something is actually sharded


def test_config_errors_name_the_binding():
    with pytest.raises(ValueError, match=r"LoRAConfig.targets.*'qq'"):
        lora.LoRAConfig(targets=("q", "qq"))
    with pytest.raises(ValueError, match="LoRAConfig.rank = 0"):
        lora.LoRAConfig(rank=0)
    assert lora.LoRAConfig(rank=8, alpha=16.0).scale == 2.0


def test_gradients_reach_both_factors_once_b_is_nonzero():
    """At b = 0 only b gets a gradient (d/da = (x·)ᵀ·g·bᵀ = 0); the factored path's
    gradients equal those through the merged kernels."""
    params = _base(CONFIG)
    tokens = _tokens()

    def loss(ad, merged):
        if merged:
            out = Transformer(CONFIG).apply({"params": lora.merge(params, ad, LORA)}, tokens)[0]
        else:
            out = Transformer(CONFIG).apply(lora.variables(params, ad, LORA), tokens)[0]
        return jnp.mean(jax.nn.log_softmax(out)[..., 3])

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g0 = grad(_adapters(CONFIG), False)
    assert all(not np.any(np.asarray(ab["a"])) for ab in _pairs(g0))
    assert all(np.any(np.asarray(ab["b"])) for ab in _pairs(g0))
    ad = _adapters(CONFIG, b_scale=0.2)
    for x, y in zip(jax.tree.leaves(grad(ad, False)), jax.tree.leaves(grad(ad, True))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=1e-6)


def _pairs(ad):
    return [ab for mods in ad.values() for projs in mods.values() for ab in projs.values()]


def _get(tree, key):
    for k in key:
        tree = tree[k]
    return tree


def _pad(spec, n):
    return tuple(spec) + (None,) * (n - len(spec))

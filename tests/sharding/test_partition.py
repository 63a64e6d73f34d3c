"""Mesh + rules tables: param specs, born-sharded init, jitted step shardings, numerics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from rlaif_jax.sharding import axes as ax
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import partition
from rlaif_jax.sharding.rules import get_rules

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]


class TwoLayer(nn.Module):
    """Embedding dim D=16 -> hidden MLP=32 -> vocab V=24, with logical names."""

    @nn.compact
    def __call__(self, x):  # x: [B, D]
        w1 = self.param(
            "w1",
            nn.with_logical_partitioning(nn.initializers.normal(0.2), (ax.EMBED, ax.MLP)),
            (16, 32),
        )
        w2 = self.param(
            "w2",
            nn.with_logical_partitioning(nn.initializers.normal(0.2), (ax.MLP, ax.VOCAB)),
            (32, 24),
        )
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, (ax.NORM,)), (16,)
        )
        x = nn.with_logical_constraint(x * scale, (ax.ACT_BATCH, ax.ACT_EMBED))
        h = nn.with_logical_constraint(jnp.tanh(x @ w1), (ax.ACT_BATCH, ax.ACT_MLP))
        return nn.with_logical_constraint(h @ w2, (ax.ACT_BATCH, ax.ACT_VOCAB))


EXPECTED = {
    "dp": {"w1": P(None, None), "w2": P(None, None), "scale": P(None)},
    "fsdp": {"w1": P("fsdp", None), "w2": P(None, None), "scale": P(None)},
    "fsdp_tp": {"w1": P("fsdp", "tensor"), "w2": P("tensor", None), "scale": P(None)},
}


def _loss(params, batch):
    logits = TwoLayer().apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def _batch():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(16, 16)).astype(np.float32), "y": rng.integers(0, 24, size=(16,))}


def _single_device_reference():
    model = TwoLayer()
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((2, 16))))["params"]
    batch = _batch()
    loss, grads = jax.value_and_grad(_loss)(params, batch)
    new = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    return float(loss), new


def test_resolve_degrees():
    assert mesh_lib.resolve_degrees(8, -1, 1, 1) == (8, 1, 1)
    assert mesh_lib.resolve_degrees(8, 2, -1, 2) == (2, 2, 2)
    with pytest.raises(ValueError, match="multiply to"):
        mesh_lib.resolve_degrees(8, 2, 2, 1)
    with pytest.raises(ValueError, match="At most one"):
        mesh_lib.resolve_degrees(8, -1, -1, 1)


def test_unknown_rules_table_names_gin_binding():
    with pytest.raises(ValueError, match="get_rules.name"):
        get_rules("zero3")


@pytest.mark.parametrize("shape", MESHES)
@pytest.mark.parametrize("rules_name", ["dp", "fsdp", "fsdp_tp"])
def test_sharded_step_matches_single_device(shape, rules_name):
    mesh = mesh_lib.make_mesh(*shape, devices=jax.devices()[:8])
    rules = get_rules(rules_name)
    model = TwoLayer()

    def init_fn(rng):
        return model.init(rng, jnp.zeros((2, 16)))["params"]

    params, shardings = partition.init_sharded(init_fn, mesh, rules, jax.random.key(0))
    # Params are born sharded with the expected specs.
    for name, spec in EXPECTED[rules_name].items():
        assert shardings[name].spec == spec, (name, shardings[name].spec)
        assert params[name].sharding.is_equivalent_to(shardings[name], params[name].ndim)

    def step(params, batch):
        loss, grads = jax.value_and_grad(_loss)(params, batch)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), loss

    batch = partition.global_batch(_batch(), mesh)
    batch_shardings = {k: partition.batch_sharding(mesh, v.ndim) for k, v in batch.items()}
    jitted = partition.jit_sharded(
        step,
        in_shardings=(shardings, batch_shardings),
        out_shardings=(shardings, partition.replicated(mesh)),
        donate_argnums=(0,),
    )
    with partition.sharding_context(mesh, rules):
        new_params, loss = jitted(params, batch)
    for name in EXPECTED[rules_name]:
        assert new_params[name].sharding.is_equivalent_to(shardings[name], new_params[name].ndim)
    ref_loss, ref_params = _single_device_reference()
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    for name in ref_params:
        np.testing.assert_allclose(
            np.asarray(new_params[name]), np.asarray(ref_params[name]), rtol=1e-5, atol=1e-6
        )


def test_global_batch_is_batch_sharded():
    mesh = mesh_lib.make_mesh(2, 2, 2, devices=jax.devices()[:8])
    out = partition.global_batch({"t": np.arange(32).reshape(8, 4)}, mesh)
    assert out["t"].shape == (8, 4)
    assert out["t"].sharding.spec == P(("data", "fsdp"), None)
    np.testing.assert_array_equal(np.asarray(out["t"]), np.arange(32).reshape(8, 4))


def test_default_mesh_uses_auto_axes():
    from jax.sharding import AxisType

    mesh = mesh_lib.make_mesh(2, -1, 2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == AxisType.Auto for t in mesh.axis_types)

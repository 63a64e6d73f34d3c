"""Sharded == single-device numerics (forward, scorer, greedy sampler); born-sharded params."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rlaif_jax.decoding import sample as sample_lib
from rlaif_jax.decoding import score as score_lib
from rlaif_jax.models import config as config_lib
from rlaif_jax.models import model as model_lib
from rlaif_jax.sharding import model_params, partition
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

CONFIG = config_lib.get_config("tiny")
CANDS = np.array([5, 9, 17], np.int32)
SAMPLER = dict(max_new_tokens=4, temperature=0.0, eos_id=1, num_samples=2)


def _inputs():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, 8).astype(np.int32)
    toks = rng.integers(3, CONFIG.vocab_size, (8, 8)).astype(np.int32)
    toks[np.arange(8)[None] >= lengths[:, None]] = 0
    return toks, lengths


def _run_all(mesh, rules, params):
    toks, lengths = _inputs()
    mask = np.arange(8)[None] < lengths[:, None]
    _, shardings = model_params.abstract_params(CONFIG, mesh, rules)
    params = jax.device_put(params, shardings)
    batch = partition.global_batch({"toks": toks, "mask": mask, "lengths": lengths}, mesh)

    def forward(p, t, m):
        with partition.sharding_context(mesh, rules):
            return model_lib.apply(CONFIG, p, t, attention_mask=m)[0]

    rows2 = partition.batch_sharding(mesh, 2)
    fwd = jax.jit(forward, in_shardings=(shardings, rows2, rows2), out_shardings=None)
    with partition.sharding_context(mesh, rules):
        logits = fwd(params, batch["toks"], batch["mask"])
    scorer = score_lib.make_scorer(CONFIG, mesh, rules, "candidates", param_shardings=shardings)
    probs, _ = scorer(params, batch["toks"], batch["lengths"], CANDS)
    sampler = sample_lib.make_sampler(CONFIG, mesh, rules, param_shardings=shardings, **SAMPLER)
    out = sampler(params, batch["toks"], batch["lengths"], jax.random.PRNGKey(0))
    return [np.asarray(x) for x in (logits, probs, out.tokens, out.logprobs, out.mask)]


@pytest.fixture(scope="module")
def reference():
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    params, _ = model_params.init_params(CONFIG, jax.random.PRNGKey(0), mesh, get_rules("dp"))
    params = jax.device_get(params)
    return params, _run_all(mesh, get_rules("dp"), params)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_equals_single_device(reference, shape):
    params, want = reference
    mesh = make_mesh(*shape)
    got = _run_all(mesh, get_rules("fsdp_tp"), params)
    names = ("logits", "candidate probs", "greedy tokens", "logprobs", "mask")
    for name, g, w in zip(names, got, want):
        if g.dtype.kind in "iu":
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-5, err_msg=name)


def test_params_born_sharded_with_expected_specs():
    mesh = make_mesh(2, 2, 2)
    params, shardings = model_params.init_params(
        CONFIG, jax.random.PRNGKey(0), mesh, get_rules("fsdp_tp")
    )
    layer = params["layers_0"]
    want = {
        ("embedder", "embedding"): P("tensor", "fsdp"),
        ("unembed", "kernel"): P("fsdp", "tensor"),
        ("final_norm", "scale"): P(None),
    }
    for path, spec in want.items():
        leaf = functools.reduce(lambda d, k: d[k], path, params)
        assert leaf.sharding.spec == spec, path
    assert layer["attn"]["q"]["kernel"].sharding.spec == P("fsdp", "tensor", None)
    assert layer["attn"]["k"]["kernel"].sharding.spec == P("fsdp", "tensor", None)
    assert layer["attn"]["o"]["kernel"].sharding.spec == P("tensor", None, "fsdp")
    assert layer["mlp"]["gate"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert layer["mlp"]["down"]["kernel"].sharding.spec == P("tensor", "fsdp")
    # Really split across devices: each holds a quarter of q (fsdp 2 x tensor 2).
    q = layer["attn"]["q"]["kernel"]
    assert q.addressable_shards[0].data.shape == (32, 2, 16)
    assert jax.tree.structure(shardings) == jax.tree.structure(params)


def test_shared_prefix_and_reward_scores_sharded(reference):
    """The labeler's shared-prefix scorer and the RM's scores on a (2, 2, 2) mesh."""
    params, _ = reference
    mesh, rules = make_mesh(2, 2, 2), get_rules("fsdp_tp")
    toks, lengths = _inputs()
    prefix = toks[0, :5]
    want = score_lib.candidate_distribution_shared_prefix(
        CONFIG, params, prefix, toks, lengths, CANDS
    )[1]
    _, shardings = model_params.abstract_params(CONFIG, mesh, rules)
    batch = partition.global_batch({"toks": toks, "lengths": lengths}, mesh)
    scorer = score_lib.make_scorer(CONFIG, mesh, rules, "candidates_shared_prefix")
    got = scorer(jax.device_put(params, shardings), prefix, batch["toks"], batch["lengths"], CANDS)
    np.testing.assert_allclose(got[1], want, atol=2e-5)

    scalar = model_lib.lm_to_scalar_params(
        params, {"score_head": {"kernel": np.linspace(-1, 1, 64, dtype=np.float32)[:, None]}}
    )
    want = score_lib.sequence_scores(CONFIG, scalar, toks, lengths)
    _, scalar_shardings = model_params.abstract_params(CONFIG, mesh, rules, "scalar")
    rm = score_lib.make_scorer(CONFIG, mesh, rules, "sequence_scores")
    got = rm(jax.device_put(scalar, scalar_shardings), batch["toks"], batch["lengths"])
    np.testing.assert_allclose(got, want, atol=2e-5)

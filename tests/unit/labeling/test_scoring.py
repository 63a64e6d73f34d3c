"""labeling/scoring.py: ModelScorer's bucketing, padding, ordering and shared-prefix
plumbing over a stand-in `rlaif_jax.decoding.score`."""

from __future__ import annotations

import numpy as np
import pytest


def _fake_decoding(monkeypatch):
    """A stand-in `rlaif_jax.decoding.score` with a bag-of-tokens 'model' (test-only), to
    check ModelScorer's bucketing, padding, ordering and shared-prefix plumbing."""
    import importlib
    import sys
    import types

    import jax.numpy as jnp

    def candidate_distribution(config, params, tokens, lengths, cands):
        L = tokens.shape[1]
        mask = jnp.arange(L)[None, :] < lengths[:, None]
        feats = jnp.where(mask[..., None], params[tokens], 0.0).sum(1)  # [B, V]
        last = jnp.take_along_axis(tokens, (lengths - 1)[:, None], axis=1)[:, 0]
        logits = feats * 0.1 + params[last]
        lp = jax.nn.log_softmax(logits, axis=-1)[:, cands]
        return jnp.exp(lp) / jnp.exp(lp).sum(-1, keepdims=True), lp

    def candidate_distribution_shared_prefix(config, params, prefix, suffix, lengths, cands):
        B = suffix.shape[0]
        toks = jnp.concatenate([jnp.broadcast_to(prefix, (B, prefix.shape[0])), suffix], 1)
        return candidate_distribution(config, params, toks, lengths + prefix.shape[0], cands)

    import jax

    fake = types.ModuleType("rlaif_jax.decoding.score")
    fake.candidate_distribution = candidate_distribution
    fake.candidate_distribution_shared_prefix = candidate_distribution_shared_prefix
    pkg = importlib.import_module("rlaif_jax.decoding")
    monkeypatch.setitem(sys.modules, "rlaif_jax.decoding.score", fake)
    monkeypatch.setattr(pkg, "score", fake, raising=False)
    return candidate_distribution


def test_model_scorer_batching_and_shared_prefix(monkeypatch):
    import jax

    from rlaif_jax.labeling.scoring import ModelScorer
    from rlaif_jax.sharding import mesh as mesh_lib
    from rlaif_jax.sharding import rules as rules_lib

    ref = _fake_decoding(monkeypatch)
    V = 64
    params = jax.random.normal(jax.random.PRNGKey(0), (V, V))
    mesh = mesh_lib.make_mesh(data=-1, devices=jax.devices()[:4])
    rules = rules_lib.get_rules("dp")
    rng = np.random.default_rng(0)
    prefix = tuple(rng.integers(3, V, size=20).tolist())
    suffixes = [tuple(rng.integers(3, V, size=int(n)).tolist()) for n in rng.integers(3, 40, 13)]
    cands = (5, 7)
    want = np.stack(
        [
            np.asarray(
                ref(
                    None,
                    params,
                    np.array([prefix + s]),
                    np.array([len(prefix + s)]),
                    np.array(cands),
                )[1]
            )[0]
            for s in suffixes
        ]
    )
    for shared in (True, False):
        sc = ModelScorer(None, params, mesh, rules, batch_size=8, max_len=128, shared_prefix=shared)
        np.testing.assert_allclose(sc.score(prefix, suffixes, cands), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the mesh's batch divisor"):
        ModelScorer(None, params, mesh, rules, batch_size=6)

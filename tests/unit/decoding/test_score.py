"""Scoring: candidate distributions, shared-prefix encoding, token log-probs, RM scores."""

import functools

import jax
import numpy as np
import pytest

from rlaif_jax.decoding import score as score_lib
from rlaif_jax.models import config as config_lib
from rlaif_jax.models import model as model_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

CANDS = np.array([5, 9, 17], np.int32)


def _jit(fn):
    return jax.jit(functools.partial(fn, CONFIG))


CONFIG = config_lib.get_config("tiny")


@pytest.fixture(scope="module")
def params():
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    lm, _ = model_params.init_params(CONFIG, jax.random.PRNGKey(0), mesh, get_rules("dp"))
    scalar, _ = model_params.init_params(
        CONFIG, jax.random.PRNGKey(1), mesh, get_rules("dp"), head="scalar"
    )
    # A non-zero score head (it is zero-initialised).
    scalar["score_head"]["kernel"] = jax.random.normal(jax.random.PRNGKey(2), (64, 1))
    return lm, scalar


def _batch(seed, b=4, length=9):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, b).astype(np.int32)
    lengths[0] = length
    toks = rng.integers(3, CONFIG.vocab_size, (b, length)).astype(np.int32)
    toks[np.arange(length)[None] >= lengths[:, None]] = 0
    return toks, lengths


def test_candidate_distribution_equals_full_forward(params):
    lm, _ = params
    toks, lengths = _batch(0)
    probs, logprobs = _jit(score_lib.candidate_distribution)(lm, toks, lengths, CANDS)
    for b in range(len(toks)):
        row = toks[b : b + 1, : lengths[b]]
        full, _ = model_lib.apply(CONFIG, lm, row)
        lsm = jax.nn.log_softmax(full[0, -1])
        np.testing.assert_allclose(logprobs[b], lsm[CANDS], atol=1e-5)
        np.testing.assert_allclose(probs[b], jax.nn.softmax(full[0, -1, CANDS]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-6)


def test_shared_prefix_equals_concatenated(params):
    lm, _ = params
    rng = np.random.default_rng(1)
    prefix = rng.integers(3, CONFIG.vocab_size, 11).astype(np.int32)
    suffix, lengths = _batch(2, b=4, length=6)
    full = np.zeros((4, 17), np.int32)
    for b in range(4):
        full[b, :11], full[b, 11 : 11 + lengths[b]] = prefix, suffix[b, : lengths[b]]
    want = _jit(score_lib.candidate_distribution)(lm, full, lengths + 11, CANDS)
    got = _jit(score_lib.candidate_distribution_shared_prefix)(lm, prefix, suffix, lengths, CANDS)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_shared_prefix_with_sliding_window(params):
    """Gemma-style local layers: the window counts positions across prefix and suffix."""
    config = CONFIG.replace(sliding_window=4, sliding_window_pattern=2)
    lm, _ = params
    prefix = np.arange(3, 10, dtype=np.int32)
    suffix, lengths = _batch(3, b=2, length=5)
    full = np.zeros((2, 12), np.int32)
    for b in range(2):
        full[b, :7], full[b, 7 : 7 + lengths[b]] = prefix, suffix[b, : lengths[b]]
    want = score_lib.candidate_distribution(config, lm, full, lengths + 7, CANDS)
    got = score_lib.candidate_distribution_shared_prefix(config, lm, prefix, suffix, lengths, CANDS)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)


def test_token_logprobs(params):
    lm, _ = params
    toks, lengths = _batch(4)
    mask = np.arange(toks.shape[1])[None] < lengths[:, None]
    got = np.asarray(_jit(score_lib.token_logprobs)(lm, toks, mask))
    full, _ = model_lib.apply(CONFIG, lm, toks, attention_mask=mask)
    lsm = np.asarray(jax.nn.log_softmax(full, -1))
    for b in range(len(toks)):
        assert got[b, 0] == 0.0
        for t in range(1, lengths[b]):
            np.testing.assert_allclose(got[b, t], lsm[b, t - 1, toks[b, t]], atol=1e-5)
        np.testing.assert_array_equal(got[b, lengths[b] :], 0.0)


def test_sequence_scores_at_last_real_token(params):
    _, scalar = params
    toks, lengths = _batch(5)
    got = _jit(score_lib.sequence_scores)(scalar, toks, lengths)
    assert got.shape == (4,)
    for b in range(len(toks)):
        values, _ = model_lib.apply(CONFIG, scalar, toks[b : b + 1, : lengths[b]], head="scalar")
        np.testing.assert_allclose(got[b], values[0, -1], atol=1e-5)
    assert np.std(np.asarray(got)) > 0

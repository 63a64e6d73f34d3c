"""Length bucketing gives the padded path's outputs (same rows, same tokens per row's RNG)."""

import functools

import jax
import numpy as np
import pytest

from rlaif_jax.decoding import buckets
from rlaif_jax.decoding import sample as sample_lib
from rlaif_jax.decoding import score as score_lib
from rlaif_jax.models import config as config_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

LP = 40
WIDTHS = (8, 16, 24, LP)


@pytest.fixture(scope="module")
def tiny():
    config = config_lib.get_config("tiny")
    mesh = make_mesh(2, 1, 1, devices=jax.devices()[:2])
    params, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, get_rules("dp"))
    rng = np.random.default_rng(1)
    lengths = np.array([30, 3, 7, 12, 5, 21, 2, 9], np.int32)  # mixed, unsorted
    prompts = np.zeros((len(lengths), LP), np.int32)
    for b, n in enumerate(lengths):
        prompts[b, :n] = rng.integers(3, config.vocab_size, n)
    return config, mesh, params, prompts, lengths


def test_bucket_widths_and_plan():
    assert buckets.bucket_widths(1024) == (16, 32, 64, 128, 256, 512, 1024)
    assert buckets.bucket_widths(100, min_width=10, growth=1.5) == (16, 24, 40, 56, 80, 100)
    assert buckets.bucket_for(17, (16, 32, 64), 48) == 32
    assert buckets.bucket_for(60, (16, 32, 64), 48) == 48  # never past the padded width
    groups = buckets.plan(np.array([30, 3, 7, 12]), WIDTHS, 2, LP)
    assert [g.rows.tolist() for g in groups] == [[1, 2], [3, 0]]
    assert [g.width for g in groups] == [8, LP]
    with pytest.raises(ValueError, match="bucket_groups"):
        buckets.plan(np.arange(6), WIDTHS, 4, LP)


@pytest.mark.parametrize("groups", [1, 4])
def test_bucketed_sampling_equals_padded(tiny, groups):
    config, _, params, prompts, lengths = tiny
    kw = dict(max_new_tokens=6, temperature=1.0, eos_id=(1, 5), num_samples=2)
    sampler = functools.partial(sample_lib.sample, config, **kw)
    rng = jax.random.PRNGKey(3)
    padded = sampler(params, prompts, lengths, rng)
    widths_seen = []

    def spy(p, toks, lens, key, prompt_ids):
        widths_seen.append(toks.shape[1])
        return sampler(p, toks, lens, key, prompt_ids=prompt_ids)

    run = buckets.BucketedSampler(spy, WIDTHS, groups=groups, num_samples=2)
    out = run(params, prompts, lengths, rng)
    for name in ("tokens", "mask", "lengths", "prompt_index"):
        np.testing.assert_array_equal(getattr(out, name), getattr(padded, name), err_msg=name)
    for name in ("logprobs", "sampling_logprobs"):
        np.testing.assert_allclose(getattr(out, name), getattr(padded, name), atol=2e-5)
    want = {1: [LP], 4: [8, 8, 16, LP]}[groups]
    assert widths_seen == want
    assert len({tuple(r) for r in np.asarray(out.tokens)}) > 4  # rows really sampled


def test_bucketed_make_sampler_on_mesh_keeps_rows_and_sharding(tiny):
    config, mesh, params, prompts, lengths = tiny
    kw = dict(max_new_tokens=5, temperature=0.9, eos_id=1, num_samples=1)
    plain = sample_lib.make_sampler(config, mesh, get_rules("dp"), **kw)
    rng = jax.random.PRNGKey(9)
    padded = plain(params, prompts, lengths, rng)
    out = buckets.BucketedSampler(plain, WIDTHS, groups=2)(params, prompts, lengths, rng)
    np.testing.assert_array_equal(out.tokens, padded.tokens)
    np.testing.assert_allclose(out.logprobs, padded.logprobs, atol=2e-5)
    assert out.tokens.sharding.is_equivalent_to(padded.tokens.sharding, 2)


def test_bucketed_scores_equal_padded(tiny, groups=2):
    config, _, params, prompts, lengths = tiny
    cands = np.array([3, 4], np.int32)
    cand = jax.jit(functools.partial(score_lib.candidate_distribution, config))
    fn = functools.partial(cand, params)
    probs, lps = buckets.bucketed_scores(fn, prompts, lengths, cands, widths=WIDTHS, groups=groups)
    want_probs, want_lps = fn(prompts, lengths, cands)
    np.testing.assert_allclose(probs, want_probs, atol=1e-5)
    np.testing.assert_allclose(lps, want_lps, atol=1e-5)

    rm_params, _ = model_params.init_params(
        config, jax.random.PRNGKey(2), tiny[1], get_rules("dp"), head="scalar"
    )
    seq = jax.jit(functools.partial(score_lib.sequence_scores, config))
    got = buckets.bucketed_scores(
        functools.partial(seq, rm_params), prompts, lengths, widths=WIDTHS, groups=groups
    )
    np.testing.assert_allclose(got, seq(rm_params, prompts, lengths), atol=1e-5)

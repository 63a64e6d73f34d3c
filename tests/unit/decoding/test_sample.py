"""The sampler: the decode loop driven by hand-written logits, then the real tiny model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.decoding import sample as sample_lib
from rlaif_jax.decoding import score as score_lib
from rlaif_jax.models import config as config_lib
from rlaif_jax.models import model as model_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

EOS, PAD = 1, 0


def _run_table(table, rng=0, **kw):
    """sample_loop over logits table [T, N, V]: step t's logits are table[t] whatever the
    fed token; the fed tokens are checked against what was emitted."""
    table = jnp.asarray(table, jnp.float32)
    t_max, n, _ = table.shape

    def prefill():
        return table[0], jnp.full((n, t_max), -1, jnp.int32)

    def decode(fed, tok, t):
        return table[t + 1], fed.at[:, t].set(tok)

    settings = dict(temperature=1.0, top_k=0, top_p=1.0, eos_id=EOS, pad_id=PAD)
    settings.update(kw)
    fn = jax.jit(
        lambda key: sample_lib.sample_loop(
            prefill, decode, n, key, max_new_tokens=t_max, **settings
        )
    )
    toks, lps, slps, mask, steps = fn(jax.random.PRNGKey(rng))
    return [np.asarray(x) for x in (toks, lps, slps, mask)] + [int(steps)]


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_greedy_eos_and_early_exit():
    # 2 rows, V = 5, 4 steps. Row 0: 3, 2, EOS, (pad); row 1: 4, EOS at step 1.
    table = np.full((4, 2, 5), -2.0)
    for t, tok in enumerate([3, 2, EOS, 4]):
        table[t, 0, tok] = 3.0
    for t, tok in enumerate([4, EOS, 2, 2]):
        table[t, 1, tok] = 3.0 - 0.5 * t
    toks, lps, slps, mask, steps = _run_table(table, temperature=0.0)
    np.testing.assert_array_equal(toks, [[3, 2, EOS, PAD], [4, EOS, PAD, PAD]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 0, 0]])
    assert steps == 3  # stopped once every row had emitted EOS
    want = np.zeros((2, 4))
    for r in range(2):
        for t in range(int(mask[r].sum())):
            want[r, t] = _log_softmax(table[t, r])[toks[r, t]]
    np.testing.assert_allclose(lps, want, atol=1e-6)
    np.testing.assert_array_equal(slps, 0.0)  # greedy: a point mass


def test_force_full_length_runs_every_step():
    table = np.zeros((5, 1, 4))
    table[:, 0, EOS] = 5.0
    toks, _, _, mask, steps = _run_table(table, temperature=0.0, force_full_length=True)
    assert steps == 5
    np.testing.assert_array_equal(toks, [[EOS, PAD, PAD, PAD, PAD]])
    np.testing.assert_array_equal(mask, [[1, 0, 0, 0, 0]])


def test_top_k_tokens_and_logprobs():
    n, v = 512, 8
    logits = np.array([0.0, 0.1, 0.2, 2.0, 0.3, 0.4, 0.5, 1.5])
    table = np.broadcast_to(logits, (3, n, v))
    toks, lps, slps, mask, _ = _run_table(table, top_k=2, eos_id=99)
    assert set(np.unique(toks)) == {3, 7}
    p = np.exp(_log_softmax(logits))
    np.testing.assert_allclose(lps, np.log(p[toks]), atol=1e-5)
    np.testing.assert_allclose(slps, np.log(p[toks] / (p[3] + p[7])), atol=1e-5)
    frac = (toks == 3).mean()
    assert abs(frac - p[3] / (p[3] + p[7])) < 0.06  # 1536 draws
    # top_k = 1 is greedy, with sampling log-prob 0.
    toks1, _, slps1, _, _ = _run_table(table[:, :4], top_k=1, eos_id=99)
    np.testing.assert_array_equal(toks1, 3)
    np.testing.assert_allclose(slps1, 0.0, atol=1e-6)


@pytest.mark.parametrize("top_p, kept", [(0.75, [1, 3]), (0.85, [1, 3, 4])])
def test_top_p_keeps_smallest_prefix_reaching_p(top_p, kept):
    probs = np.array([0.05, 0.5, 0.02, 0.3, 0.08, 0.05])
    table = np.broadcast_to(np.log(probs), (2, 512, 6))
    toks, lps, slps, _, _ = _run_table(table, top_p=top_p, eos_id=99)
    assert set(np.unique(toks)) == set(kept)
    np.testing.assert_allclose(lps, np.log(probs[toks]), atol=1e-5)
    np.testing.assert_allclose(slps, np.log(probs[toks] / probs[kept].sum()), atol=1e-5)


def test_temperature_sampling_logprobs():
    logits = np.array([1.0, 0.0, -1.0, 0.5])
    table = np.broadcast_to(logits, (2, 256, 4))
    toks, lps, slps, _, _ = _run_table(table, temperature=0.5, eos_id=99)
    np.testing.assert_allclose(lps, _log_softmax(logits)[toks], atol=1e-5)
    np.testing.assert_allclose(slps, _log_softmax(logits / 0.5)[toks], atol=1e-5)
    # Tempered frequencies: P(token 0) = softmax(2 * logits)[0] ~ 0.63.
    want = np.exp(_log_softmax(logits / 0.5))[0]
    assert abs((toks == 0).mean() - want) < 0.07


def test_fixed_seed_reproduces_and_rows_differ():
    table = np.zeros((6, 8, 16))
    a = _run_table(table, rng=3, eos_id=99)[0]
    b = _run_table(table, rng=3, eos_id=99)[0]
    c = _run_table(table, rng=4, eos_id=99)[0]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert len({tuple(r) for r in a}) > 1  # each row draws its own tokens


def test_rows_stop_on_different_eos_ids_and_loop_exits_early():
    # 3 rows, V = 8, stop ids {1, 5, 6}. Row 0 stops on 5 at step 1, row 1 on 6 at step
    # 2, row 2 on 1 at step 0; after step 2 every row is done, so 3 of 6 steps run.
    table = np.full((6, 3, 8), -2.0)
    for r, seq in enumerate([[3, 5, 6, 1, 2, 2], [4, 2, 6, 5, 3, 3], [1, 5, 6, 2, 2, 2]]):
        for t, tok in enumerate(seq):
            table[t, r, tok] = 3.0
    toks, lps, _, mask, steps = _run_table(table, temperature=0.0, eos_id=(5, 6, EOS))
    np.testing.assert_array_equal(
        toks, [[3, 5, PAD, PAD, PAD, PAD], [4, 2, 6, PAD, PAD, PAD], [EOS] + [PAD] * 5]
    )
    np.testing.assert_array_equal(mask.sum(1), [2, 3, 1])  # the stop token kept
    assert steps == 3
    assert (lps[mask == 0] == 0).all() and (lps[mask == 1] < 0).all()
    # Any sequence form; the single-int form stops on 1 only (row 0 runs on to it).
    same = _run_table(table, temperature=0.0, eos_id=np.array([6, 1, 5]))
    np.testing.assert_array_equal(same[0], toks)
    single = _run_table(table, temperature=0.0, eos_id=EOS)
    np.testing.assert_array_equal(single[0][0], [3, 5, 6, EOS, PAD, PAD])
    np.testing.assert_array_equal(single[0][2], [EOS] + [PAD] * 5)
    assert single[4] == 6  # row 1 never emits 1: the loop runs all 6 steps
    np.testing.assert_array_equal(single[3].sum(1), [4, 6, 1])
    # No stop ids (None or empty): every row runs to the end.
    for none in (None, ()):
        _, _, _, m, n = _run_table(table, temperature=0.0, eos_id=none)
        assert n == 6 and (m == 1).all()


def test_sampled_rows_stop_on_any_eos():
    # 256 sampled rows over 3 equally likely tokens, two of them stop ids: every row
    # stops at its first 2 or 3; token 4 never stops.
    table = np.full((8, 256, 5), -1e9)
    table[:, :, [2, 3, 4]] = 0.0
    toks, _, _, mask, steps = _run_table(table, rng=1, eos_id=[3, 2])
    lengths = mask.sum(1)
    for r in range(256):
        row = toks[r, : lengths[r]]
        stops = np.isin(row, [2, 3])
        assert stops[-1] or lengths[r] == 8
        assert not stops[:-1].any() and (toks[r, lengths[r] :] == PAD).all()
    ends = toks[np.arange(256), lengths - 1]
    assert {2, 3} <= set(ends[np.isin(ends, [2, 3])].tolist())  # both ids stop rows
    assert steps == lengths.max()


def test_normalize_eos_ids():
    norm = sample_lib.normalize_eos_ids
    assert norm(1) == (1,) and norm(np.int32(7)) == (7,) and norm(None) == () and norm(-1) == ()
    assert norm((128009, 128001, 128008, 128001)) == (128001, 128008, 128009)
    assert norm([5, -1]) == (5,) and norm(np.array([2, 3])) == (2, 3) and norm([]) == ()
    for bad in (1.5, [1, 2.0], True):
        with pytest.raises(TypeError, match="eos_id"):
            norm(bad)


# --- The real tiny model -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    config = config_lib.get_config("tiny")
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    params, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, get_rules("dp"))
    rng = np.random.default_rng(0)
    lengths = np.array([4, 1, 6], np.int32)
    prompts = np.zeros((3, 6), np.int32)
    for b, n in enumerate(lengths):
        prompts[b, :n] = rng.integers(3, config.vocab_size, n)
    return config, params, prompts, lengths


def test_model_sampling_samples_per_prompt_and_logprobs(tiny):
    config, params, prompts, lengths = tiny
    kw = dict(max_new_tokens=5, temperature=1.0, eos_id=EOS, num_samples=3)
    out = sample_lib.sample(config, params, prompts, lengths, jax.random.PRNGKey(7), **kw)
    assert out.tokens.shape == (9, 5) and out.logprobs.shape == (9, 5)
    np.testing.assert_array_equal(out.prompt_index, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    again = sample_lib.sample(config, params, prompts, lengths, jax.random.PRNGKey(7), **kw)
    np.testing.assert_array_equal(out.tokens, again.tokens)
    assert len({tuple(r) for r in np.asarray(out.tokens)[:3]}) > 1
    np.testing.assert_allclose(out.logprobs, out.sampling_logprobs, atol=1e-5)  # T=1, no cut
    # The raw log-probs equal teacher-forced scoring of (prompt, response), packed
    # right-padded into one batch.
    seqs, masks = np.zeros((9, 11), np.int32), np.zeros((9, 11), bool)
    for r in range(9):
        b, n = int(out.prompt_index[r]), int(out.lengths[r])
        seq = np.concatenate([prompts[b, : lengths[b]], np.asarray(out.tokens[r, :n])])
        seqs[r, : len(seq)], masks[r, : len(seq)] = seq, True
    tf = np.asarray(
        jax.jit(score_lib.token_logprobs, static_argnums=0)(config, params, seqs, masks)
    )
    for r in range(9):
        b, n = int(out.prompt_index[r]), int(out.lengths[r])
        np.testing.assert_allclose(
            tf[r, lengths[b] : lengths[b] + n], out.logprobs[r, :n], atol=1e-5
        )


def test_model_greedy_equals_uncached_argmax(tiny):
    """Greedy cached decoding == re-running the full forward on the growing sequence."""
    config, params, prompts, lengths = tiny
    out = sample_lib.sample(
        config, params, prompts, lengths, jax.random.PRNGKey(0),
        max_new_tokens=4, temperature=0.0, eos_id=EOS, num_samples=2,
    )  # fmt: skip
    toks = np.asarray(out.tokens)
    np.testing.assert_array_equal(toks[0::2], toks[1::2])  # greedy samples agree
    apply = jax.jit(model_lib.apply, static_argnums=0)
    seqs = np.zeros((3, 10), np.int32)
    seqs[:, :6] = prompts
    n = lengths.copy()
    for _ in range(4):
        mask = np.arange(10)[None] < n[:, None]
        logits, _ = apply(config, params, seqs, attention_mask=mask, logits_positions=n - 1)
        seqs[np.arange(3), n] = np.argmax(np.asarray(logits), axis=-1)
        n += 1
    for b in range(3):
        np.testing.assert_array_equal(toks[2 * b], seqs[b, lengths[b] : lengths[b] + 4])


def test_model_sampling_with_eos_tuple(tiny):
    """A tuple of stop ids in which only one id can ever be sampled equals the single-id
    run (tokens, log-probs, lengths), and an id in the tuple does stop rows."""
    config, params, prompts, lengths = tiny
    kw = dict(max_new_tokens=6, temperature=1.0, num_samples=4)
    key, v = jax.random.PRNGKey(11), config.vocab_size
    # Pick as EOS a token the model emits often at this seed, so rows do stop early; the
    # free run goes through make_sampler (eos_id=None: no stop).
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    run = sample_lib.make_sampler(config, mesh, get_rules("dp"), eos_id=None, **kw)
    free = run(params, jnp.asarray(prompts), jnp.asarray(lengths), key)
    assert (np.asarray(free.lengths) == 6).all()
    common = int(np.bincount(np.asarray(free.tokens).ravel()).argmax())
    one = sample_lib.sample(config, params, prompts, lengths, key, eos_id=common, **kw)
    # Ids >= vocab_size can never be sampled.
    many = sample_lib.sample(config, params, prompts, lengths, key, eos_id=(v + 5, common, v), **kw)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    lens = np.asarray(one.lengths)
    assert (lens < 6).any()  # the EOS did stop some rows, right after emitting it
    toks = np.asarray(one.tokens)
    np.testing.assert_array_equal(toks[lens < 6, lens[lens < 6] - 1], common)
    # Same key, same draws: each row is the free row cut after its first `common`.
    for r in range(len(lens)):
        np.testing.assert_array_equal(toks[r, : lens[r]], np.asarray(free.tokens)[r, : lens[r]])

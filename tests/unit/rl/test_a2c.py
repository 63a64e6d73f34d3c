"""A2C losses against loop-based NumPy references (and rlax where it has an equivalent)."""

import importlib
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.rl import a2c

B, T, V = 4, 6, 5


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([6, 3, 1, 4])  # row 2: EOS at once; padding after EOS elsewhere
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    logp = rng.normal(-1.5, 0.5, (B, T)).astype(np.float32)
    anchor = rng.normal(-1.5, 0.5, (B, T)).astype(np.float32)
    values = rng.normal(0, 1, (B, T)).astype(np.float32)
    # Fractional rewards must survive end to end (a peer truncates them to integers).
    scores = np.array([0.37, -1.25, 2.5, 0.01], np.float32)
    logits = rng.normal(0, 1, (B, T, V)).astype(np.float32)
    # Garbage in the padding must not leak into anything.
    for arr in (logp, anchor, values):
        arr[mask == 0] = 1e3
    return scores, logp, anchor, values, mask, lengths, logits


def _np_returns(scores, logp, anchor, mask, lengths, beta, w):
    """Loop reference: r_t = −β(logp − anchor), plus w·R at the last token; Z_t = Σ_{t'≥t} r."""
    z = np.zeros((B, T), np.float64)
    for b in range(B):
        n = lengths[b]
        r = [-beta * (logp[b, t] - anchor[b, t]) for t in range(n)]
        r[n - 1] += w * scores[b]
        for t in range(n):
            z[b, t] = sum(r[t:])
    return z


@pytest.mark.parametrize("reward_weight", ["one", "one_minus_beta"])
@pytest.mark.parametrize("beta", [0.0, 0.05, 0.3])
def test_returns_match_numpy(reward_weight, beta):
    scores, logp, anchor, values, mask, lengths, _ = _batch()
    rewards = a2c.per_token_rewards(scores, logp, anchor, mask, beta, reward_weight)
    z = np.asarray(a2c.returns_to_go(rewards, mask))
    w = 1.0 if reward_weight == "one" else 1.0 - beta
    np.testing.assert_allclose(
        z, _np_returns(scores, logp, anchor, mask, lengths, beta, w), 1e-5, 1e-5
    )
    assert np.all(z[mask == 0] == 0)
    if beta == 0.0:
        # The paper's terminal-reward MDP: Z_t = R at every valid token, fractions kept.
        np.testing.assert_array_equal(z, scores[:, None] * mask)


def test_one_minus_beta_scales_terminal_reward_only():
    scores, logp, anchor, _, mask, lengths, _ = _batch()
    r1 = np.asarray(a2c.per_token_rewards(scores, logp, anchor, mask, 0.2, "one"))
    r2 = np.asarray(a2c.per_token_rewards(scores, logp, anchor, mask, 0.2, "one_minus_beta"))
    diff = r1 - r2
    for b in range(B):
        np.testing.assert_allclose(diff[b, lengths[b] - 1], 0.2 * scores[b], rtol=1e-5)
        assert np.all(diff[b, : lengths[b] - 1] == 0)


@pytest.mark.parametrize("normalize", ["tokens", "sequences"])
def test_policy_and_value_losses_match_numpy(normalize):
    scores, logp, anchor, values, mask, lengths, _ = _batch()
    hyper = a2c.A2CHyper(kl_coef=0.05, normalize=normalize)
    returns, advs = a2c.rollout_targets(scores, logp, anchor, values, mask, hyper)
    z = _np_returns(scores, logp, anchor, mask, lengths, 0.05, 1.0)
    adv_np = (z - values) * mask
    np.testing.assert_allclose(np.asarray(advs), adv_np, 1e-5, 1e-5)

    pg = a2c.policy_loss(jnp.asarray(logp), advs, mask, normalize)
    vl = a2c.value_loss(jnp.asarray(values), returns, mask, normalize)
    pg_tok = np.zeros((B, T))
    vl_tok = np.zeros((B, T))
    for b in range(B):
        for t in range(lengths[b]):
            pg_tok[b, t] = -logp[b, t] * adv_np[b, t]
            vl_tok[b, t] = (z[b, t] - values[b, t]) ** 2
    if normalize == "tokens":
        want_pg, want_vl = pg_tok.sum() / lengths.sum(), vl_tok.sum() / lengths.sum()
    else:
        want_pg, want_vl = pg_tok.sum(1).mean(), vl_tok.sum(1).mean()
    np.testing.assert_allclose(float(pg), want_pg, rtol=1e-5)
    np.testing.assert_allclose(float(vl), want_vl, rtol=1e-5)


def test_policy_gradient_does_not_flow_through_advantage():
    scores, logp, anchor, values, mask, lengths, _ = _batch()
    hyper = a2c.A2CHyper()
    _, advs = a2c.rollout_targets(scores, logp, anchor, values, mask, hyper)

    def f(lp, v):
        adv = a2c.advantages(jnp.asarray(scores)[:, None] * mask, v, mask)
        return a2c.policy_loss(lp, adv, mask)

    g_lp, g_v = jax.grad(f, argnums=(0, 1))(jnp.asarray(logp), jnp.asarray(values))
    assert np.all(np.asarray(g_v) == 0)  # stop-gradient on A_t
    # d/dlogp = −A_t / n_tokens on valid tokens, 0 on padding.
    adv_np = (scores[:, None] - values) * mask
    np.testing.assert_allclose(np.asarray(g_lp), -adv_np / lengths.sum(), rtol=1e-5, atol=1e-7)


def test_value_gradient_matches_numpy():
    scores, logp, anchor, values, mask, lengths, _ = _batch()
    z = jnp.asarray(scores)[:, None] * mask
    g = jax.grad(lambda v: a2c.value_loss(v, z, mask, "sequences"))(jnp.asarray(values))
    want = -2 * (np.asarray(z) - values) * mask / B
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5, atol=1e-6)


def test_whitened_advantages():
    scores, logp, anchor, values, mask, lengths, _ = _batch()
    hyper = a2c.A2CHyper(whiten_advantages=True)
    _, advs = a2c.rollout_targets(scores, logp, anchor, values, mask, hyper)
    raw = (_np_returns(scores, logp, anchor, mask, lengths, 0.05, 1.0) - values)[mask == 1]
    want = (raw - raw.mean()) / np.sqrt(raw.var() + 1e-8)
    np.testing.assert_allclose(np.asarray(advs)[mask == 1], want, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(advs)[mask == 0] == 0)


def test_entropy_and_total_loss():
    scores, logp, anchor, values, mask, lengths, logits = _batch()
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ent = -(p * np.log(p)).sum(-1)
    np.testing.assert_allclose(np.asarray(a2c.token_entropy(logits)), ent, rtol=1e-5)
    hyper = a2c.A2CHyper(entropy_coef=0.1, value_coef=0.5)
    returns, advs = a2c.rollout_targets(scores, logp, anchor, values, mask, hyper)
    total, parts = a2c.a2c_loss(
        jnp.asarray(logp), jnp.asarray(values), jnp.asarray(logits), returns, advs, mask, hyper
    )
    mean_ent = (ent * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(parts["entropy"]), mean_ent, rtol=1e-5)
    want = float(parts["policy_loss"]) + 0.5 * float(parts["value_loss"]) - 0.1 * mean_ent
    np.testing.assert_allclose(float(total), want, rtol=1e-5)


def test_explained_variance():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(B, T)).astype(np.float32)
    mask = np.ones((B, T), np.float32)
    assert abs(float(a2c.explained_variance(z, z, mask)) - 1.0) < 1e-6
    v = rng.normal(size=(B, T)).astype(np.float32)
    want = 1 - np.var(z - v) / np.var(z)
    np.testing.assert_allclose(float(a2c.explained_variance(v, z, mask)), want, rtol=1e-5)


def test_running_stats_match_numpy_over_batches():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, n).astype(np.float32) for n in (5, 17, 1, 9)]
    stats = a2c.RunningStats.zeros()
    for c in chunks:
        stats = a2c.update_running_stats(stats, c)
    allx = np.concatenate(chunks)
    np.testing.assert_allclose(float(stats.count), allx.size)
    np.testing.assert_allclose(float(stats.mean), allx.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(stats.var), allx.var(), rtol=1e-4)
    normed = a2c.normalize_rewards(jnp.asarray(chunks[-1]), stats)
    np.testing.assert_allclose(
        np.asarray(normed), (chunks[-1] - allx.mean()) / allx.std(), rtol=1e-4, atol=1e-5
    )


def test_bad_choices_name_the_gin_binding():
    mask = np.ones((1, 2), np.float32)
    with pytest.raises(ValueError, match="RLSettings.normalize"):
        a2c.reduce_loss(mask, mask, "batch")
    with pytest.raises(ValueError, match="RLSettings.reward_weight"):
        a2c.reward_scale(0.1, "half")


# ----------------------------------------------------------------------------- rlax
# Optional (only these comparisons need it); installed but failing to import is a failure.
rlax = importlib.import_module("rlax") if importlib.util.find_spec("rlax") else None

needs_rlax = pytest.mark.skipif(rlax is None, reason="rlax not installed: no rlax comparison")


@needs_rlax
def test_returns_match_rlax_discounted_returns():
    scores, logp, anchor, values, mask, lengths, _ = _batch()
    rewards = a2c.per_token_rewards(scores, logp, anchor, mask, 0.05)
    ours = np.asarray(a2c.returns_to_go(rewards, mask))
    for b in range(B):
        n = lengths[b]
        r = jnp.asarray(rewards[b, :n])
        z = rlax.discounted_returns(r, jnp.ones(n), jnp.zeros(n))  # γ = 1, no bootstrap
        np.testing.assert_allclose(ours[b, :n], np.asarray(z), rtol=1e-5, atol=1e-6)


@needs_rlax
def test_advantage_matches_rlax_td_lambda_one():
    """TD(λ=1) errors with γ = 1 and a zero terminal bootstrap are Z_t − V(x_t)."""
    scores, logp, anchor, values, mask, lengths, _ = _batch()
    hyper = a2c.A2CHyper()
    returns, advs = a2c.rollout_targets(scores, logp, anchor, values, mask, hyper)
    rewards = a2c.per_token_rewards(scores, logp, anchor, mask, hyper.kl_coef)
    for b in range(B):
        n = lengths[b]
        v_tm1 = jnp.asarray(values[b, :n])
        v_t = jnp.concatenate([v_tm1[1:], jnp.zeros(1)])
        lam_ret = rlax.td_lambda(v_tm1, jnp.asarray(rewards[b, :n]), jnp.ones(n), v_t, 1.0)
        np.testing.assert_allclose(
            np.asarray(advs[b, :n]), np.asarray(lam_ret), rtol=1e-4, atol=1e-5
        )


@needs_rlax
def test_policy_loss_matches_rlax_policy_gradient_loss():
    """rlax averages over all T steps of one trajectory: equals ours ("sequences") / T."""
    scores, logp, anchor, values, mask, lengths, logits = _batch()
    actions = np.argmax(logits, -1)
    lp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), actions[..., None], -1)[..., 0]
    advs = (scores[:, None] - values) * mask
    for b in range(B):
        ours = a2c.policy_loss(lp[b : b + 1], advs[b : b + 1], mask[b : b + 1], "sequences")
        theirs = rlax.policy_gradient_loss(
            jnp.asarray(logits[b]),
            jnp.asarray(actions[b]),
            jnp.asarray(advs[b]),
            jnp.asarray(mask[b]),
        )
        np.testing.assert_allclose(float(ours) / T, float(theirs), rtol=1e-5, atol=1e-6)

"""Pure A2C / REINFORCE-with-baseline losses for language models (paper §1.5, App. F).

Everything here is a pure function of arrays, callable without jit, mesh or gin.
Shapes: B sequences (rollouts), T response tokens. `mask[b, t]` is 1 for the
response tokens the policy produced, EOS included, and 0 for padding after EOS.

The MDP (γ = 1, deterministic, terminal reward):

- per-token reward, KL-control (Jaques et al. 2017) folded into the return:
  `r_t = −β·(log π(a_t|x_t) − log π_sft(a_t|x_t))`, plus `w·R` at the last
  valid token, where `w = 1` (v1, the usual `r − β·KL`) or `w = 1 − β` (v2/v3
  App. A.3, `reward_weight="one_minus_beta"`).
- return `Z_t = Σ_{t' ≥ t} r_t'` (with β = 0, `Z_t = R` for every t).
- advantage `A_t = Z_t − V(x_t)`, never differentiated.
- policy loss `−Σ_t log π(a_t|x_t)·A_t`, value loss `Σ_t (Z_t − V(x_t))²`.

Normalisation (`normalize`): "tokens" averages over every valid token in the batch
(each token weighs the same; long responses weigh more in total); "sequences" sums
over each sequence's tokens and averages over sequences — the paper's literal Σ_t,
whose gradient scale grows with response length.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

NORMALIZE_CHOICES = ("tokens", "sequences")
REWARD_WEIGHT_CHOICES = ("one", "one_minus_beta")


# ----------------------------------------------------------------------------- masked stats
def masked_mean(x: Array, mask: Array) -> Array:
    """Mean of `x` over positions where `mask` is 1 (0 if the mask is empty)."""
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_var(x: Array, mask: Array) -> Array:
    """Population variance of `x` over the masked positions."""
    mean = masked_mean(x, mask)
    return masked_mean(jnp.square(x - mean), mask)


def masked_whiten(x: Array, mask: Array, eps: float = 1e-8, shift_mean: bool = True) -> Array:
    """(x − mean)/std over the masked positions; padding stays 0."""
    mean = masked_mean(x, mask)
    std = jnp.sqrt(masked_var(x, mask) + eps)
    out = (x - mean) / std if shift_mean else x / std
    return out * mask


def reduce_loss(
    per_token: Array, mask: Array, normalize: str = "tokens", num_tokens: Array | None = None
) -> Array:
    """Reduces a [B, T] per-token loss to a scalar ("tokens" or "sequences", see module doc).

    num_tokens: the token mean's denominator when it is not this batch's own token count
    (a microbatch divides by the whole batch's tokens / M, so the M slices average to the
    whole batch's mean)."""
    if normalize == "tokens":
        if num_tokens is not None:
            return jnp.sum(per_token * mask) / num_tokens
        return masked_mean(per_token, mask)
    if normalize == "sequences":
        return jnp.mean(jnp.sum(per_token * mask, axis=-1))
    raise ValueError(
        f"Unknown loss normalisation {normalize!r} (RLSettings.normalize); "
        f"choose one of {NORMALIZE_CHOICES}."
    )


# ----------------------------------------------------------------------------- rewards/returns
def last_token_mask(mask: Array) -> Array:
    """[B, T] one-hot of each row's last valid token (all zeros for an empty row)."""
    mask = mask.astype(jnp.float32)
    lengths = jnp.sum(mask, axis=-1).astype(jnp.int32)
    onehot = jax.nn.one_hot(lengths - 1, mask.shape[-1], dtype=jnp.float32)
    return onehot * (lengths > 0)[:, None]


def reward_scale(kl_coef: float, reward_weight: str = "one") -> float:
    """Weight on the RM score: 1 (r − β·KL) or 1 − β (the v2 paper's (1−β)·r − β·KL)."""
    if reward_weight == "one":
        return 1.0
    if reward_weight == "one_minus_beta":
        return 1.0 - kl_coef
    raise ValueError(
        f"Unknown reward weighting {reward_weight!r} (RLSettings.reward_weight); "
        f"choose one of {REWARD_WEIGHT_CHOICES}."
    )


def per_token_kl(logprobs: Array, anchor_logprobs: Array, mask: Array) -> Array:
    """k1 estimator of KL(π ‖ π_sft) per token: log π − log π_sft at the sampled tokens, masked."""
    return (logprobs - anchor_logprobs) * mask


def per_token_rewards(
    scores: Array,
    logprobs: Array,
    anchor_logprobs: Array,
    mask: Array,
    kl_coef: float = 0.05,
    reward_weight: str = "one",
) -> Array:
    """[B, T] rewards: −β·KL_t at every valid token, plus w·R[b] at the last valid one.

    scores [B] float (terminal reward R), logprobs / anchor_logprobs [B, T] of the
    sampled tokens under the rollout policy and the frozen SFT anchor, mask [B, T].
    """
    mask = mask.astype(jnp.float32)
    w = reward_scale(kl_coef, reward_weight)
    kl = per_token_kl(logprobs, anchor_logprobs, mask)
    terminal = last_token_mask(mask) * (w * scores.astype(jnp.float32))[:, None]
    return -kl_coef * kl + terminal


def returns_to_go(rewards: Array, mask: Array) -> Array:
    """Z_t = Σ_{t' ≥ t} r_t' (γ = 1, no bootstrap), zero on padding. [B, T] -> [B, T]."""
    masked = rewards * mask
    reversed_cumsum = jnp.cumsum(masked[:, ::-1], axis=-1)[:, ::-1]
    return reversed_cumsum * mask


def advantages(
    returns: Array, values: Array, mask: Array, whiten: bool = False, eps: float = 1e-8
) -> Array:
    """A_t = Z_t − V(x_t), stop-gradient; optionally whitened over the batch's valid tokens."""
    adv = jax.lax.stop_gradient((returns - values) * mask)
    if whiten:
        adv = masked_whiten(adv, mask, eps)
    return adv


# ----------------------------------------------------------------------------- losses
def policy_loss(
    logprobs: Array, advs: Array, mask: Array, normalize: str = "tokens", num_tokens=None
) -> Array:
    """−Σ_t log π(a_t|x_t)·stopgrad(A_t), reduced by `normalize`. logprobs differentiable."""
    per_token = -logprobs * jax.lax.stop_gradient(advs)
    return reduce_loss(per_token, mask, normalize, num_tokens)


def value_loss(
    values: Array, returns: Array, mask: Array, normalize: str = "tokens", num_tokens=None
) -> Array:
    """Σ_t (Z_t − V(x_t))² (targets not differentiated), reduced by `normalize`."""
    per_token = jnp.square(jax.lax.stop_gradient(returns) - values)
    return reduce_loss(per_token, mask, normalize, num_tokens)


def token_entropy(logits: Array) -> Array:
    """Entropy of softmax(logits) per position. [B, T, V] -> [B, T] (float32)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def entropy_loss(logits: Array, mask: Array, normalize: str = "tokens", num_tokens=None) -> Array:
    """−entropy (minimising it is the entropy bonus), reduced by `normalize`."""
    return reduce_loss(-token_entropy(logits), mask, normalize, num_tokens)


def explained_variance(values: Array, returns: Array, mask: Array) -> Array:
    """1 − Var(Z − V)/Var(Z) over valid tokens (1 = perfect baseline, ≤ 0 = useless)."""
    var_z = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / jnp.maximum(var_z, 1e-8)


# ----------------------------------------------------------------------------- running stats
class RunningStats(NamedTuple):
    """Running mean / variance of a scalar stream (Chan et al. parallel update); a pytree."""

    count: Array
    mean: Array
    var: Array

    @classmethod
    def zeros(cls) -> RunningStats:
        z = jnp.zeros((), jnp.float32)
        return cls(count=z, mean=z, var=jnp.ones((), jnp.float32))


def update_running_stats(stats: RunningStats, x: Array) -> RunningStats:
    """Folds the batch `x` (any shape) into the running mean and population variance."""
    x = x.astype(jnp.float32).reshape(-1)
    n = jnp.asarray(x.shape[0], jnp.float32)
    b_mean = jnp.mean(x)
    b_var = jnp.var(x)
    total = stats.count + n
    delta = b_mean - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + b_var * n + jnp.square(delta) * stats.count * n / total
    return RunningStats(count=total, mean=mean, var=m2 / total)


def normalize_rewards(scores: Array, stats: RunningStats, eps: float = 1e-8) -> Array:
    """(R − running mean)/running std, with stats that already include this batch."""
    return (scores - stats.mean) / jnp.sqrt(stats.var + eps)


# ----------------------------------------------------------------------------- whole objective
class A2CHyper(NamedTuple):
    """The loss knobs (plain literals; the stage's gin-configurable dataclass fills them)."""

    kl_coef: float = 0.05
    reward_weight: str = "one"
    normalize: str = "tokens"
    whiten_advantages: bool = False
    entropy_coef: float = 0.0
    value_coef: float = 1.0


def rollout_targets(
    scores: Array,
    logprobs: Array,
    anchor_logprobs: Array,
    values: Array,
    mask: Array,
    hyper: A2CHyper,
) -> tuple[Array, Array]:
    """(returns Z [B, T], advantages A [B, T]) from one rollout batch; fixed during the update.

    `values` are V(x_t) of the rollout-time value params (the baseline), `logprobs` the
    rollout policy's log-probs of its own tokens (the KL-control reward is a constant).
    """
    mask = mask.astype(jnp.float32)
    rewards = per_token_rewards(
        scores, logprobs, anchor_logprobs, mask, hyper.kl_coef, hyper.reward_weight
    )
    returns = returns_to_go(rewards, mask)
    advs = advantages(returns, values, mask, whiten=hyper.whiten_advantages)
    return returns, advs


def a2c_loss(
    logprobs: Array | None,
    values: Array | None,
    logits: Array | None,
    returns: Array,
    advs: Array,
    mask: Array,
    hyper: A2CHyper,
    num_tokens: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Total loss = policy + value_coef·value − entropy_coef·entropy, and its parts.

    logprobs [B, T] (current policy, differentiable), values [B, T] (current value
    model, differentiable), logits [B, T, V] or None (needed only for the entropy
    bonus), returns / advs [B, T] from `rollout_targets`; num_tokens: see `reduce_loss`.
    logprobs (with logits) or values may be None: the loss of the other part alone (the
    policy and the value stepped on devices of their own; the terms share no parameter,
    so the two losses sum to the joint one and their gradients are its gradients).
    """
    mask = mask.astype(jnp.float32)
    total = jnp.zeros((), jnp.float32)
    parts = {}
    if logprobs is not None:
        pg = policy_loss(logprobs, advs, mask, hyper.normalize, num_tokens)
        total, parts["policy_loss"] = total + pg, pg
    if values is not None:
        vl = value_loss(values, returns, mask, hyper.normalize, num_tokens)
        total, parts["value_loss"] = total + hyper.value_coef * vl, vl
    if logits is not None:
        ent = masked_mean(token_entropy(logits), mask)
        parts["entropy"] = ent
        if hyper.entropy_coef:
            total = total + hyper.entropy_coef * entropy_loss(
                logits, mask, hyper.normalize, num_tokens
            )
    parts["loss"] = total
    return total, parts

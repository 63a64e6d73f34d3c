"""Pure losses (no jit or mesh needed): SFT cross-entropy and the paper's soft-label RM loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlaif_jax.models import model as model_lib
from rlaif_jax.models.logprob import picked_logprobs, token_logprobs


def next_token_loss(logits, tokens, loss_mask, alt_tokens=None, alt_weight=None):
    """Mean cross-entropy of tokens[:, t] under logits[:, t - 1] over loss_mask[:, t].

    logits [B, L, V] float32; tokens [B, L] int32; loss_mask [B, L] (1 on target tokens,
    EOS included). Returns (loss scalar, number of target tokens).
    alt_tokens [B, L] int32 / alt_weight [B, L] in [0, 1] (optional): a two-token soft
    target where alt_weight > 0: position t's target is tokens[:, t] with probability
    1 − w and alt_tokens[:, t] with probability w (e.g. a rater's P("2") for "1"/"2").
    """
    # Position t's logits predict tokens[:, t + 1]: the targets are shifted rather than
    # the [B, L, V] logits sliced (the last position's term carries weight 0).
    if alt_tokens is None:
        nll = -token_logprobs(logits, _next(tokens))
    else:  # both targets under one normaliser
        lp = picked_logprobs(logits, jnp.stack([_next(tokens), _next(alt_tokens)], axis=-1))
        w = _next(alt_weight).astype(jnp.float32)
        nll = -((1.0 - w) * lp[..., 0] + w * lp[..., 1])
    mask = _next(loss_mask).astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)
    return (nll * mask).sum() / count, mask.sum()


def _next(x):
    """x [B, L] -> [B, L]: x[:, t + 1] at t, 0 at the last position."""
    return jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)


def lm_loss(config, params, batch, rng):
    """SFT loss of `config`'s LM on a batch: (loss, {"target_tokens": count}).

    batch: tokens / attention_mask / loss_mask [B, L] (loss on the target + EOS tokens),
    with the optional two-token soft targets `alt_tokens` / `alt_weight` [B, L] of
    `next_token_loss`. `functools.partial(lm_loss, config)` is a `train.loop` loss_fn
    (rng unused).
    """
    del rng
    logits, _ = model_lib.apply(
        config, params, batch["tokens"], attention_mask=batch["attention_mask"]
    )
    loss, count = next_token_loss(
        logits,
        batch["tokens"],
        batch["loss_mask"],
        batch.get("alt_tokens"),
        batch.get("alt_weight"),
    )
    return loss, {"target_tokens": count}


def soft_label_rm_loss(r1, r2, p):
    """-[p log σ(r1 − r2) + (1 − p) log σ(r2 − r1)], mean over the batch (paper §1.4).

    r1, r2 [B] scalar rewards; p [B] = P(response1 preferred) in [0, 1]; p ∈ {0, 1} is the
    Bradley–Terry loss of human labels.
    """
    d = (r1 - r2).astype(jnp.float32)
    p = p.astype(jnp.float32)
    return -(p * jax.nn.log_sigmoid(d) + (1.0 - p) * jax.nn.log_sigmoid(-d)).mean()


def pairwise_agreement(r1, r2, label):
    """Per-pair agreement [B] in {0, 0.5, 1}: does the RM rank the preferred response higher?

    r1, r2, label [B] (label = P(resp1 ≻ resp2)). A score tie r1 == r2 counts one half, so
    an RM that scores everything alike sits at chance (0.5), not at 0; so does a label tie
    (label == 0.5, a pair with no preference), which is neither response's win.
    """
    right = jnp.where(label > 0.5, r1 > r2, r2 > r1).astype(jnp.float32)
    return jnp.where((r1 == r2) | (label == 0.5), 0.5, right)


def pairwise_accuracy(r1, r2, label):
    """Share of pairs where the RM ranks the preferred response higher (label = P(resp1)).

    r1, r2, label [B] -> scalar mean of `pairwise_agreement` (ties on either side: half).
    """
    return jnp.mean(pairwise_agreement(r1, r2, label))

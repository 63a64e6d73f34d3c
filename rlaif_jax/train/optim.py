"""Optimizers: Adafactor (the paper's), Adam, AdamW; schedules; clipping."""

from __future__ import annotations

import optax


def make_schedule(
    learning_rate: float = 1e-5,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    final_fraction: float = 0.0,
) -> optax.Schedule:
    """'constant', 'linear' or 'cosine' decay after a linear warmup."""
    if schedule == "constant":
        main = optax.constant_schedule(learning_rate)
    elif schedule in ("linear", "cosine"):
        if not total_steps:
            raise ValueError(
                f"make_schedule.schedule={schedule!r} needs make_schedule.total_steps."
            )
        decay = max(1, total_steps - warmup_steps)
        if schedule == "linear":
            main = optax.linear_schedule(learning_rate, learning_rate * final_fraction, decay)
        else:
            main = optax.cosine_decay_schedule(learning_rate, decay, alpha=final_fraction)
    else:
        raise ValueError(f"make_schedule.schedule={schedule!r}: use constant, linear or cosine.")
    if warmup_steps:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, learning_rate, warmup_steps), main], [warmup_steps]
        )
    return main


def make_optimizer(
    name: str = "adafactor",
    schedule: optax.Schedule | float | None = None,
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
) -> optax.GradientTransformation:
    """The optimizer (paper: Adafactor, lr 1e-5) with global-norm clipping first.

    schedule: a learning rate or an optax schedule (default `make_schedule()`: 1e-5)."""
    lr = schedule if schedule is not None else make_schedule()
    if name == "adafactor":
        opt = optax.adafactor(learning_rate=lr, weight_decay_rate=weight_decay or None)
    elif name == "adam":
        opt = optax.adam(lr, b1=b1, b2=b2)
    elif name == "adamw":
        opt = optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay)
    elif name == "sgd":
        opt = optax.sgd(lr)
    else:
        raise ValueError(f"make_optimizer.name={name!r}: use adafactor, adam, adamw or sgd.")
    if clip_norm:
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return opt

"""Length bucketing: run prompts at a few static widths so cost follows their real lengths.

Prompts arrive right-padded to the layout's `max_prompt_len` (1024 in the paper's runs,
while most TL;DR posts are far shorter). Padding costs twice in decoding: the prefill
computes on it and every decode step attends over all Lp + T cache slots. Here a batch
[B, Lp] is cut into `groups` equal row groups after sorting its rows by length; each
group is trimmed to the smallest bucket width that holds its longest prompt. Group
sizes and widths are static, so each (rows, width) pair compiles once; with G groups and
W widths there are at most G·W compilations, usually far fewer.

Outputs are the padded path's: the model sees the same tokens at the same positions
(slots past a row's length are masked either way), and the sampler's randomness is per
prompt id (`decoding.sample`), so each row draws the same tokens whichever group runs it.
Only floating-point rounding of differently shaped matmuls can differ (~1e-6 in fp32).

B batch, Lp padded prompt length, W bucket width, S samples per prompt, T new tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlaif_jax.decoding.sample import SampleOutput


def bucket_widths(max_len: int, min_width: int = 16, growth: float = 2.0) -> tuple[int, ...]:
    """Static widths min_width, min_width·growth, ... (multiples of 8) and finally
    `max_len` itself: e.g. (16, 32, 64, 128, 256, 512, 1024) for 1024."""
    if max_len < 1 or min_width < 1 or growth <= 1.0:
        raise ValueError(
            f"bucket_widths(max_len={max_len}, min_width={min_width}, growth={growth}): "
            "need max_len >= 1, min_width >= 1, growth > 1."
        )
    widths, w = [], float(min_width)
    while w < max_len:
        rounded = int(-(-int(round(w)) // 8) * 8)
        if rounded < max_len and (not widths or rounded > widths[-1]):
            widths.append(rounded)
        w *= growth
    return (*widths, int(max_len))


def bucket_for(length: int, widths: Sequence[int], max_len: int) -> int:
    """The smallest width >= length, capped at max_len (the padded width)."""
    for w in widths:
        if w >= length:
            return min(int(w), max_len)
    return max_len


def groups_for(batch: int, divisor: int = 1, max_groups: int = 4) -> int:
    """The most length groups (<= max_groups) a batch of `batch` rows splits into with
    every group's rows still divisible by `divisor` (the mesh's batch shards): e.g. 4 for
    64 rows on 8 devices, 2 for 16 rows on 8, 1 for 8 rows on 8."""
    for g in range(max(1, max_groups), 0, -1):
        if batch % (g * max(1, divisor)) == 0:
            return g
    return 1


class Group(NamedTuple):
    """rows [g] int: prompt indices in the batch (ascending length); width: the bucket."""

    rows: np.ndarray
    width: int


def plan(lengths: np.ndarray, widths: Sequence[int], groups: int, max_len: int) -> list[Group]:
    """Rows sorted by length (stable) and cut into `groups` equal groups, each with the
    bucket width of its longest prompt. lengths [B]; B must divide by `groups`."""
    lengths = np.asarray(lengths).reshape(-1)
    b = lengths.shape[0]
    if groups < 1 or b % groups:
        raise ValueError(
            f"length bucketing: {b} prompts per batch do not split into groups={groups} "
            "equal groups (set the `bucket_groups` setting to a divisor of the batch)."
        )
    order = np.argsort(lengths, kind="stable")
    size = b // groups
    out = []
    for g in range(groups):
        rows = order[g * size : (g + 1) * size]
        out.append(Group(rows, bucket_for(int(lengths[rows].max()), widths, max_len)))
    return out


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


def run_grouped(
    fn: Callable[..., Any],
    tokens,
    lengths,
    *args,
    widths: Sequence[int],
    groups: int = 1,
    rows_per_prompt: int = 1,
) -> Any:
    """fn(tokens [g, W], lengths [g], *args, prompt_ids [g]) -> pytree of [g·R, ...] rows,
    run per group and put back in the batch's row order (R = rows_per_prompt, e.g. S).

    tokens [B, Lp] right-padded, lengths [B]. `fn` gets each group's original prompt
    indices as `prompt_ids` (sampling keys its randomness on them; scorers ignore them).
    With groups == 1 the batch keeps its row order and is only trimmed to its bucket.
    """
    tokens_h, lengths_h = _host(tokens), _host(lengths).astype(np.int32)
    max_len = tokens_h.shape[1]
    parts, order = [], []
    for group in plan(lengths_h, widths, groups, max_len):
        rows = group.rows if groups > 1 else np.arange(len(lengths_h))
        parts.append(
            fn(
                tokens_h[rows, : group.width],
                lengths_h[rows],
                *args,
                prompt_ids=rows.astype(np.int32),
            )
        )
        order.append(rows)
    if len(parts) == 1 and groups == 1:
        return parts[0]
    prompts = np.concatenate(order)
    row_order = (prompts[:, None] * rows_per_prompt + np.arange(rows_per_prompt)).reshape(-1)
    inverse = np.argsort(row_order).astype(np.int32)
    return jax.tree.map(lambda *xs: _reorder(xs, inverse), *parts)


def _concat_take(parts, inverse):
    return jnp.concatenate(parts, axis=0)[inverse]


@functools.lru_cache(maxsize=32)
def _reorder_fn(sharding) -> Callable:
    return jax.jit(_concat_take, out_shardings=sharding)


def _reorder(parts: Sequence[Any], inverse: np.ndarray) -> jax.Array:
    """concatenate(parts)[inverse], laid out as the first part (e.g. rows sharded over the
    mesh's batch axes), so callers get what the padded path would have returned."""
    sharding = getattr(parts[0], "sharding", None)
    named = sharding if isinstance(sharding, jax.sharding.NamedSharding) else None
    if named is not None:  # the permutation replicated on the parts' mesh, not XLA's pick
        replicated = jax.sharding.NamedSharding(named.mesh, jax.sharding.PartitionSpec())
        inverse = jax.device_put(inverse, replicated)
    return _reorder_fn(named)(tuple(parts), inverse)


class BucketedSampler:
    """A `make_sampler`/`sample`-style callable `(params, prompt_tokens [B, Lp],
    prompt_lengths [B], rng) -> SampleOutput` that runs length groups at bucket widths.

    sampler(params, tokens, lengths, rng, prompt_ids=...) is the plain sampler (e.g.
    `decoding.sample.make_sampler(...)`); num_samples: its S; widths: the buckets (None:
    `bucket_widths(Lp)`). The result equals the sampler's on the padded batch (same rows,
    same order, same tokens)."""

    def __init__(
        self,
        sampler: Callable[..., SampleOutput],
        widths: Sequence[int] | None = None,
        groups: int = 1,
        num_samples: int = 1,
    ):
        self.sampler = sampler
        self.widths = None if widths is None else tuple(int(w) for w in widths)
        self.groups, self.num_samples = int(groups), int(num_samples)

    def __call__(self, params, prompt_tokens, prompt_lengths, rng) -> SampleOutput:
        if jax.process_count() > 1:
            # Regrouping needs every row's length on this host; across hosts each would
            # plan alone. Multi-host runs keep the padded path.
            return self.sampler(params, prompt_tokens, prompt_lengths, rng)

        def one(tokens, lengths, *, prompt_ids):
            return self.sampler(params, tokens, lengths, rng, prompt_ids=prompt_ids)

        return run_grouped(
            one,
            prompt_tokens,
            prompt_lengths,
            widths=self.widths or bucket_widths(prompt_tokens.shape[1]),
            groups=self.groups,
            rows_per_prompt=self.num_samples,
        )  # the sampler's output type (tree.map keeps the SampleOutput of each group)


def bucketed_scores(
    score_fn: Callable[..., Any],
    tokens,
    lengths,
    *args,
    widths: Sequence[int],
    groups: int = 1,
) -> Any:
    """score_fn(tokens [g, W], lengths [g], *args) -> pytree of [g, ...] (e.g.
    `score.candidate_distribution` or `score.sequence_scores` with config and params bound),
    run per length group at its bucket width; rows in the batch's order."""

    def one(t, n, *a, prompt_ids):
        del prompt_ids  # scores are deterministic
        return score_fn(t, n, *a)

    return run_grouped(one, tokens, lengths, *args, widths=widths, groups=groups)

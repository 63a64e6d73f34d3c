"""The sampler: one prefill pass, then a `lax.while_loop` over a preallocated KV cache.

Prompts are right-padded [B, Lp] with lengths [B]. The cache has Lp + T slots: the
prefill writes slots [0, Lp) (slots at or past a row's length are masked out), and
decode step t writes slot Lp + t for every row at once, with per-row RoPE position
length_b + t. So rows of different lengths share one write index and one compiled
loop, and the attended tokens and positions are exactly those of the contiguous
sequence (prompt, response) — the teacher-forced scorer reproduces the log-probs.

A row is done as soon as it emits any of its stop ids (`eos_id`: one id, several —
Llama-3-Instruct stops on three — or none); the loop exits as soon as every row is done
(unless `force_full_length`). Rows are prompt-major: row b * S + s is sample s of prompt b.

Randomness is per row: row r draws step t's token with key fold_in(fold_in(rng, r), t),
where r = prompt_id * S + s and prompt_id defaults to the row's index in the batch. So a
row's sample does not depend on which other rows share its batch or on the padded
width: `decoding.buckets` regroups prompts by length and passes their original ids, and
gets the padded path's tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rlaif_jax.models import model as model_lib
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.sharding import model_params, partition
from rlaif_jax.sharding.rules import Rules

_NEG = -1e30

EosIds = int | Sequence[int] | None


def normalize_eos_ids(eos_id: EosIds) -> tuple[int, ...]:
    """`eos_id` (an int, a sequence of ints such as `data.vocab.stop_ids(vocab)`, or None:
    no early stop) as a static tuple: sorted and unique (so equal id sets share one
    compiled sampler), negative ids (SentencePiece's -1 = none) dropped."""
    if eos_id is None:
        return ()
    if np.ndim(eos_id) == 0:
        ids = [eos_id]
    else:
        ids = list(np.asarray(eos_id).reshape(-1))
    out = set()
    for i in ids:
        if not np.issubdtype(np.asarray(i).dtype, np.integer):  # bools and floats too
            raise TypeError(f"eos_id must be an int, a sequence of ints or None, got {eos_id!r}")
        if int(i) >= 0:
            out.add(int(i))
    return tuple(sorted(out))


class SampleOutput(NamedTuple):
    """N = B * S rows, T = max_new_tokens.

    tokens [N, T] int32 (pad after the stop token; the stop token itself kept); logprobs [N, T] float32: log-prob
    of each token under the policy's raw distribution softmax(logits) (what RL needs);
    sampling_logprobs [N, T]: under the tempered, top-k/top-p-truncated distribution
    actually sampled from (0 for greedy); mask [N, T] int32: 1 for generated tokens (EOS
    included); lengths [N] int32 generated tokens incl. EOS; prompt_index [N] int32.

    `logprobs` equal `score.token_logprobs` on (prompt, response) to ~1e-5 in float32;
    with bfloat16 compute they differ by up to ~1e-2 (different matmul shapes round
    differently), so RL losses should use teacher-forced log-probs there. Prompts need
    length >= 1.
    """

    tokens: jax.Array
    logprobs: jax.Array
    sampling_logprobs: jax.Array
    mask: jax.Array
    lengths: jax.Array
    prompt_index: jax.Array


def process_logits(logits, temperature: float, top_k: int, top_p: float):
    """Tempered, truncated logits [N, V] to sample from (-inf outside top-k / top-p)."""
    logits = logits.astype(jnp.float32) / max(temperature, 1e-6)
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, _NEG, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        cum_before = jnp.cumsum(probs, axis=-1) - probs
        # Keep the smallest prefix whose mass reaches top_p (the crossing token included).
        keep = cum_before < top_p
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, _NEG, logits)
    return logits


def sample_loop(
    prefill_fn: Callable[[], tuple[jax.Array, Any]],
    decode_fn: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]],
    num_rows: int,
    rng: jax.Array,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_id: EosIds,
    pad_id: int,
    force_full_length: bool = False,
    row_ids: jax.Array | None = None,
):
    """The decode loop over abstract model steps (so tests can drive it with fake logits).

    prefill_fn() -> (logits [N, V] for the first new token, state); decode_fn(state, token
    [N] int32, t scalar) -> (logits [N, V] for token t + 1, state). `eos_id`: stop id(s),
    see `normalize_eos_ids`; a row is done once it emits any of them. Returns
    (tokens, logprobs, sampling_logprobs, mask) each [N, T] and the number of steps run
    (T, or fewer when every row emitted a stop id). row_ids [N] int32 (default arange):
    each row's random stream is fold_in(rng, row_ids[r]), so equal ids draw equal tokens
    from equal logits whatever the batch.
    """
    t_max = max_new_tokens
    if row_ids is None:
        row_ids = jnp.arange(num_rows, dtype=jnp.int32)
    row_keys = jax.vmap(jax.random.fold_in, (None, 0))(rng, row_ids)
    # A compile-time constant [E]: one [N, E] compare per step, no host sync.
    stop = jnp.asarray(normalize_eos_ids(eos_id), jnp.int32)
    logits0, state0 = prefill_fn()
    zeros_i = jnp.full((num_rows, t_max), pad_id, jnp.int32)
    zeros_f = jnp.zeros((num_rows, t_max), jnp.float32)

    def choose(logits, t):
        raw_lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        if temperature == 0.0:
            tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            samp_lp = jnp.zeros(tok.shape, jnp.float32)
        else:
            processed = process_logits(logits, temperature, top_k, top_p)
            keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, t)
            tok = jax.vmap(jax.random.categorical)(keys, processed).astype(jnp.int32)
            samp_lp = jnp.take_along_axis(jax.nn.log_softmax(processed, -1), tok[:, None], 1)[:, 0]
        lp = jnp.take_along_axis(raw_lp, tok[:, None], 1)[:, 0]
        return tok, lp, samp_lp

    def emit(t, logits, done, outs):
        """Chooses token t for every row and records it (pad, mask 0 once a row is done)."""
        tok, lp, slp = choose(logits, t)
        live = ~done
        tok = jnp.where(live, tok, pad_id)
        toks, lps, slps, mask = outs
        outs = (
            toks.at[:, t].set(tok),
            lps.at[:, t].set(jnp.where(live, lp, 0.0)),
            slps.at[:, t].set(jnp.where(live, slp, 0.0)),
            mask.at[:, t].set(live.astype(jnp.int32)),
        )
        hit = jnp.any(tok[:, None] == stop[None, :], axis=-1)  # False for E = 0
        return tok, done | hit, outs

    def cond(carry):
        t, done = carry[0], carry[2]
        more = t < t_max
        return more if force_full_length else more & ~jnp.all(done)

    def body(carry):
        t, tok, done, outs, state = carry
        # Feed token t - 1, get the logits of token t: T - 1 decode steps in all.
        logits, state = decode_fn(state, tok, t - 1)
        tok, done, outs = emit(t, logits, done, outs)
        return (t + 1, tok, done, outs, state)

    outs = (zeros_i, zeros_f, zeros_f, jnp.zeros((num_rows, t_max), jnp.int32))
    tok, done, outs = emit(jnp.int32(0), logits0, jnp.zeros((num_rows,), bool), outs)
    t, _, _, outs, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), tok, done, outs, state0))
    return (*outs, t)


def compute_dtype_params(config: ModelConfig, params):
    """Matrices cast to the compute dtype once, outside the decode loop, so each step reads
    bf16 weights (half the bytes of the fp32 masters). The layers cast them to the same
    dtype anyway, so the numbers are unchanged; norm scales (vectors) stay as they are."""
    dt = jnp.dtype(config.dtype)

    def cast(x):
        return x.astype(dt) if x.ndim >= 2 and jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, params)


def _sample_impl(
    config: ModelConfig,
    params,
    prompt_tokens,
    prompt_lengths,
    rng,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_id: tuple[int, ...],
    pad_id: int,
    num_samples: int,
    force_full_length: bool,
    prompt_ids=None,
) -> SampleOutput:
    b, lp = prompt_tokens.shape
    n = b * num_samples
    if prompt_ids is None:
        prompt_ids = jnp.arange(b, dtype=jnp.int32)
    prompt_ids = prompt_ids.astype(jnp.int32)
    row_ids = (prompt_ids[:, None] * num_samples + jnp.arange(num_samples)[None, :]).reshape(-1)
    params = compute_dtype_params(config, params)
    prompt_lengths = prompt_lengths.astype(jnp.int32)
    lengths = jnp.repeat(prompt_lengths, num_samples, axis=0)
    slots = lp + max_new_tokens
    slot_ids = jnp.arange(slots)[None, :]
    prompt_slots = slot_ids < lengths[:, None]  # [N, S]

    def prefill():
        # Each prompt is encoded once (not once per sample) into a cache of Lp slots, so
        # the prefill attends over Lp keys, not Lp + T; then the cache is repeated per
        # sample and padded to its full size once.
        cache = model_lib.init_cache(config, b, lp)
        logits, cache = model_lib.apply(
            config,
            params,
            prompt_tokens.astype(jnp.int32),
            attention_mask=jnp.arange(lp)[None, :] < prompt_lengths[:, None],
            cache=cache,
            cache_index=0,
            logits_positions=jnp.maximum(prompt_lengths - 1, 0),
        )
        pad = ((0, 0), (0, 0), (0, max_new_tokens), (0, 0))  # [B, K, S, Dh]: slots
        cache = tuple(
            tuple(jnp.pad(jnp.repeat(x, num_samples, axis=0), pad) for x in layer)
            for layer in cache
        )
        return jnp.repeat(logits, num_samples, axis=0), cache

    def decode(cache, tok, t):
        valid = prompt_slots | ((slot_ids >= lp) & (slot_ids <= lp + t))
        logits, cache = model_lib.apply(
            config,
            params,
            tok[:, None],
            positions=(lengths + t)[:, None],
            attention_mask=valid,
            cache=cache,
            cache_index=lp + t,
            logits_positions=jnp.zeros((n,), jnp.int32),
        )
        return logits, cache

    toks, lps, slps, mask, _ = sample_loop(
        prefill,
        decode,
        n,
        rng,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        pad_id=pad_id,
        force_full_length=force_full_length,
        row_ids=row_ids,
    )
    return SampleOutput(
        tokens=toks,
        logprobs=lps,
        sampling_logprobs=slps,
        mask=mask,
        lengths=mask.sum(axis=1).astype(jnp.int32),
        prompt_index=jnp.repeat(prompt_ids, num_samples),
    )


@functools.lru_cache(maxsize=64)
def _jitted(config: ModelConfig, **static) -> Callable:
    return jax.jit(functools.partial(_sample_impl, config, **static))


def sample(
    config: ModelConfig,
    params,
    prompt_tokens,
    prompt_lengths,
    rng,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: EosIds,
    pad_id: int = 0,
    num_samples: int = 1,
    force_full_length: bool = False,
    prompt_ids=None,
) -> SampleOutput:
    """Samples `num_samples` continuations of each prompt (temperature 0 = greedy).

    prompt_tokens [B, Lp] right-padded, prompt_lengths [B]. `eos_id`: an int, a sequence
    of ints (every one stops a row, e.g. `data.vocab.stop_ids(vocab)`) or None (no early stop).
    prompt_ids [B] int (default arange(B)): each prompt's random-stream id, also returned as
    `prompt_index`. Compiled once per (config, shapes, decoding settings). See `SampleOutput`.
    Inputs are placed where XLA chooses: for params sharded over a mesh use `make_sampler`,
    which declares the params' and the batch's shardings.
    """
    fn = _jitted(
        config,
        max_new_tokens=int(max_new_tokens),
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        eos_id=normalize_eos_ids(eos_id),
        pad_id=int(pad_id),
        num_samples=int(num_samples),
        force_full_length=bool(force_full_length),
    )
    ids = None if prompt_ids is None else jnp.asarray(prompt_ids, jnp.int32)
    return fn(params, jnp.asarray(prompt_tokens), jnp.asarray(prompt_lengths), rng, prompt_ids=ids)


def make_sampler(
    config: ModelConfig, mesh: Mesh, rules: Rules, *, param_shardings=None, **static
) -> Callable[..., SampleOutput]:
    """A jitted `(params, prompt_tokens, prompt_lengths, rng, prompt_ids=None) ->
    SampleOutput` with the batch sharded over ('data', 'fsdp') and params as
    `param_shardings` (default: the model's logical rules). `static` are `sample`'s
    keywords (`eos_id` required, an int, a sequence of ints or None). Compiled once per
    prompt shape (`decoding.buckets.BucketedSampler` calls it at a few static widths).
    With the default shardings, equal arguments return the same sampler, so its
    compilations are reused (evaluation decodes several policies of one config)."""
    static = _static_settings(static)
    if param_shardings is None:
        return _default_sampler(config, mesh, rules, tuple(sorted(static.items())))
    return _build_sampler(config, mesh, rules, param_shardings, static)


@functools.lru_cache(maxsize=16)
def _default_sampler(config: ModelConfig, mesh: Mesh, rules: Rules, static: tuple):
    _, param_shardings = model_params.abstract_params(config, mesh, rules, "lm")
    return _build_sampler(config, mesh, rules, param_shardings, dict(static))


def _static_settings(static: dict) -> dict:
    """`make_sampler`'s keywords, normalised and hashable."""
    static = dict(static)
    out = dict(
        max_new_tokens=int(static.pop("max_new_tokens")),
        temperature=float(static.pop("temperature", 1.0)),
        top_k=int(static.pop("top_k", 0)),
        top_p=float(static.pop("top_p", 1.0)),
        eos_id=normalize_eos_ids(static.pop("eos_id")),
        pad_id=int(static.pop("pad_id", 0)),
        num_samples=int(static.pop("num_samples", 1)),
        force_full_length=bool(static.pop("force_full_length", False)),
    )
    return out


def _build_sampler(
    config, mesh, rules, param_shardings, static: dict
) -> Callable[..., SampleOutput]:
    b1, b2 = partition.batch_sharding(mesh, 1), partition.batch_sharding(mesh, 2)
    out_shardings = SampleOutput(b2, b2, b2, b2, b1, b1)
    impl = functools.partial(_sample_impl, config, **static)
    ins = (param_shardings, b2, b1, partition.replicated(mesh))
    jitted = partition.jit_sharded(impl, ins, out_shardings)
    with_ids = partition.jit_sharded(
        lambda p, t, lens, r, ids: impl(p, t, lens, r, prompt_ids=ids), (*ins, b1), out_shardings
    )

    def run(params, prompt_tokens, prompt_lengths, rng, prompt_ids=None) -> SampleOutput:
        with partition.sharding_context(mesh, rules):
            if prompt_ids is None:
                return jitted(params, prompt_tokens, prompt_lengths, rng)
            return with_ids(params, prompt_tokens, prompt_lengths, rng, prompt_ids)

    return run

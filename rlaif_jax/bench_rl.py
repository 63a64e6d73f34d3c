"""Benchmarks of the RL loop's pieces (issue #22): length bucketing and one RL step.

`rlaif-jax bench --preset toy_policy --workload buckets` times sampling and last-token
scoring of prompts with TL;DR-like real lengths, padded to the layout's width vs run at
static length buckets (`decoding.buckets`), alternating runs in one process, and checks
that both give the same tokens. `--workload rl_step` times one RL step (`rl.runner`) on
a random policy, value and anchor with a random reward model, and reports where its
seconds go (rollout, reward scoring, teacher-forced forward passes, update).
`--workload eval_label_buckets` times the three user paths that bucket by length outside
RL, each against its padded twin on the same prompts: evaluation decoding
(`policy_decode.decode_policy`, bucketed=True vs False), the labeler's candidate
scoring and its CoT rationale sampling (`labeling.scoring.ModelScorer.score` and
`.generate`, length_buckets=True vs False).

B batch, Lp padded prompt width, T new tokens, S samples per prompt.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlaif_jax import policy_decode
from rlaif_jax.data.layout import InputLayout
from rlaif_jax.decoding import buckets
from rlaif_jax.decoding import sample as sample_lib
from rlaif_jax.decoding import score as score_lib
from rlaif_jax.labeling.scoring import ModelScorer
from rlaif_jax.rl import roles as roles_lib
from rlaif_jax.rl.runner import RLRunner, RLSettings
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

# (batch, padded prompt width, new tokens, samples per prompt) of the bucketing workload,
# by `bench --shapes` name.
BUCKET_SHAPES = {"full": (64, 1024, 128, 1), "small": (16, 256, 32, 2), "tiny": (8, 64, 8, 2)}
# (prompts, batch per call, padded prompt width, new tokens, shared labeling preamble) of
# the eval_label_buckets workload.
EVAL_LABEL_SHAPES = {
    "full": (256, 64, 1024, 128, 256),
    "small": (64, 16, 256, 32, 64),
    "tiny": (16, 8, 64, 8, 16),
}


def tldr_lengths(n: int, max_len: int, seed: int = 0) -> np.ndarray:
    """[n] prompt lengths shaped like TL;DR posts under the paper's prompt budget, scaled to
    `max_len`: the filtered posts are at most 512 tokens, mostly 150-400, under a
    1024-token prompt width, so lengths are log-normal (median 0.27·max_len, sigma 0.45),
    clipped to [0.05, 0.55]·max_len."""
    rng = np.random.default_rng(seed)
    x = np.exp(rng.normal(np.log(0.27), 0.45, size=n))
    return np.clip(np.round(x * max_len), 0.05 * max_len, 0.55 * max_len).astype(np.int32)


def _alternate(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each fn; one untimed warm-up each, then rounds in turn."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_buckets(
    config, params, repeats: int, shape: tuple[int, int, int, int] = BUCKET_SHAPES["small"],
    groups: tuple[int, ...] = (1, 4),
) -> dict:  # fmt: skip
    """Padded vs bucketed sampling (T = 0.9, every step run) and candidate scoring on
    TL;DR-like lengths; ratios are padded time / bucketed time, per number of groups."""
    b, lp, new, s = shape
    lengths = tldr_lengths(b, lp)
    rng = np.random.default_rng(1)
    tokens = np.zeros((b, lp), np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(3, config.vocab_size, n)
    kw = dict(max_new_tokens=new, temperature=0.9, eos_id=None, num_samples=s)
    plain = functools.partial(sample_lib.sample, config, **kw)
    key = jax.random.PRNGKey(0)
    widths = buckets.bucket_widths(lp)
    cands = jnp.array([3, 4], jnp.int32)
    cand = jax.jit(functools.partial(score_lib.candidate_distribution, config))

    fns: dict[str, Callable[[], Any]] = {
        "sample_padded": lambda: plain(params, tokens, lengths, key).tokens,
        "score_padded": lambda: cand(params, tokens, lengths, cands),
    }
    padded = plain(params, tokens, lengths, key)
    padded_scores = cand(params, tokens, lengths, cands)
    out: dict[str, Any] = dict(
        bucket_shape_batch_width_new_samples=[b, lp, new, s],
        bucket_prompt_lengths=lengths.tolist(),
        bucket_widths=list(widths),
    )
    for g in groups:
        sampler = buckets.BucketedSampler(plain, widths, groups=g, num_samples=s)
        got = sampler(params, tokens, lengths, key)
        scores = buckets.bucketed_scores(
            functools.partial(cand, params), tokens, lengths, cands, widths=widths, groups=g
        )
        out[f"bucketed_g{g}_identical_tokens"] = bool(
            np.array_equal(np.asarray(got.tokens), np.asarray(padded.tokens))
        )
        out[f"bucketed_g{g}_max_logprob_diff"] = float(
            np.max(np.abs(np.asarray(got.logprobs) - np.asarray(padded.logprobs)))
        )
        out[f"bucketed_g{g}_max_score_diff"] = float(
            np.max(np.abs(np.asarray(scores[1]) - np.asarray(padded_scores[1])))
        )
        fns[f"sample_g{g}"] = functools.partial(
            lambda f: f(params, tokens, lengths, key).tokens, sampler
        )
        fns[f"score_g{g}"] = functools.partial(
            lambda g_: buckets.bucketed_scores(
                functools.partial(cand, params), tokens, lengths, cands, widths=widths, groups=g_
            ),
            g,
        )
    med = _alternate(fns, repeats)
    out.update({f"bucket_{k}_s": v for k, v in med.items()})
    for g in groups:
        out[f"bucketed_g{g}_vs_padded_sample_speedup"] = med["sample_padded"] / med[f"sample_g{g}"]
        out[f"bucketed_g{g}_vs_padded_score_speedup"] = med["score_padded"] / med[f"score_g{g}"]
    return out


class _CharVocab:
    """A stand-in vocabulary for the RL step benchmark: printable characters <-> ids
    3 .. V-1 (pad 0, eos 1, no BOS), so random responses detokenize to text the reward
    model tokenizes again, as a real reward path does."""

    pad_id, eos_id, bos_id = 0, 1, None

    def __init__(self, vocab_size: int):
        self.span = min(95, vocab_size - 3)

    def encode(self, s: str) -> list[int]:
        return [3 + (ord(c) - 32) % self.span for c in s]

    def decode(self, ids) -> str:
        return "".join(chr(32 + (int(i) - 3) % self.span) for i in ids if int(i) >= 3)


# (prompts per step, samples per prompt, context tokens, response tokens): "small" is the
# toy demo's RL stage (gin/runs/toy_world.gin: batch 32 x 2 samples, contexts of up to
# 80 tokens, responses of up to 24); "full" the paper's (App. G: 128 prompts, 1024 + 128).
RL_STEP_SHAPES = {"full": (128, 1, 1024, 128), "small": (32, 2, 80, 24), "tiny": (8, 2, 16, 8)}


def bench_rl_step(config, params, repeats: int, shape=RL_STEP_SHAPES["small"]) -> dict:
    """One RL step (`rl.runner.RLRunner.step`: rollout, reward model, teacher-forced
    policy/anchor/value passes, A2C update) on random models of `config`; medians of
    each part's seconds and share over `repeats` steps after one warm-up step."""
    b, s, ctx, resp = shape
    mesh, rules = make_mesh(1, 1, 1, devices=jax.devices()[:1]), get_rules("dp")
    vocab = _CharVocab(config.vocab_size)
    settings = RLSettings(
        batch_size=b, samples_per_prompt=s, max_context=ctx, max_response=resp, temperature=0.9
    )
    layout = InputLayout(max_context=ctx, max_response=resp)
    lm = jax.tree.map(jnp.copy, params)  # the roles own (and donate) their copy
    roles = roles_lib.build_roles(config, lm, mesh, rules)
    rm_params, _ = model_params.init_params(
        config, jax.random.PRNGKey(5), mesh, rules, head="scalar"
    )
    rm = jax.jit(functools.partial(score_lib.sequence_scores, config))
    width = ctx + resp

    def reward_fn(contexts, texts):
        rows = [vocab.encode(c + t)[-width:] or [3] for c, t in zip(contexts, texts)]
        toks = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            toks[i, : len(r)] = r
        lens = np.array([len(r) for r in rows], np.int32)
        return np.asarray(rm(rm_params, toks, lens))

    # As rl.stage.make_sample_fn builds it (without that module's gin configurables).
    plain = sample_lib.make_sampler(
        config, mesh, rules, max_new_tokens=resp, temperature=0.9, eos_id=vocab.eos_id,
        pad_id=vocab.pad_id, num_samples=s,
    )  # fmt: skip
    sample_fn = buckets.BucketedSampler(plain, None, groups=settings.bucket_groups, num_samples=s)
    runner = RLRunner(settings, roles, reward_fn, vocab, mesh, rules, sample_fn, layout)
    lengths = tldr_lengths(b, ctx, seed=2)
    rng = np.random.default_rng(3)
    records = [
        {"context": "".join(chr(rng.integers(97, 123)) for _ in range(int(n)))} for n in lengths
    ]
    runner.step(records, jax.random.PRNGKey(0))  # compile + warm-up
    steps = [runner.step(records, jax.random.PRNGKey(i + 1)) for i in range(repeats)]
    keys = [k for k in steps[0] if k.startswith("time_")] + ["loop_tokens_per_s", "step_seconds"]
    out = {f"rl_step_{k}": statistics.median(m[k] for m in steps) for k in keys}
    out["rl_step_shape_prompts_samples_context_response"] = list(shape)
    return out


def bench_eval_label_buckets(
    config, params, repeats: int, shape: tuple[int, ...] = EVAL_LABEL_SHAPES["small"]
) -> dict:
    """Evaluation decoding and the labeler, bucketed vs padded, on N prompts with
    TL;DR-like lengths (`tldr_lengths`) in batches of B: decode_policy at T = 0.9 with
    up to T_new tokens (an EOS may end rows early, alike on both paths), and
    ModelScorer.score and ModelScorer.generate (CoT rationales of up to T_new tokens at
    T = 0.9) of each prompt after a shared P-token preamble. Ratios are padded time /
    bucketed time; outputs must match (same texts and rationales; scores within fp32
    rounding)."""
    n, batch, width, new, preamble = shape
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    rules = get_rules("dp")
    vocab = _CharVocab(config.vocab_size)
    layout = InputLayout(max_context=width, max_response=new)
    lengths = tldr_lengths(n, width, seed=4)
    rng = np.random.default_rng(5)
    records = [
        {"id": str(i), "context": "".join(chr(rng.integers(97, 123)) for _ in range(int(k)))}
        for i, k in enumerate(lengths)
    ]

    def decode(bucketed: bool) -> list[str]:
        return policy_decode.decode_policy(
            config, params, vocab, layout, records, mesh, rules,
            temperature=0.9, batch_size=batch, seed=0, bucketed=bucketed,
        )  # fmt: skip

    prefix = [int(t) for t in rng.integers(3, config.vocab_size, preamble)]
    suffixes = [[int(t) for t in rng.integers(3, config.vocab_size, int(k))] for k in lengths]
    cands = [3, 4]
    scorers = {
        b: ModelScorer(
            config,
            params,
            mesh,
            rules,
            batch_size=batch,
            max_len=preamble + width,
            length_buckets=b,
        )  # fmt: skip
        for b in (True, False)
    }

    def rationales(bucketed: bool) -> list[list[list[int]]]:
        return scorers[bucketed].generate(
            prefix, suffixes, max_new_tokens=new, temperature=0.9, top_k=0, num_samples=1,
            seed=0,
        )  # fmt: skip

    texts = {b: decode(b) for b in (True, False)}
    scores = {b: scorers[b].score(prefix, suffixes, cands) for b in (True, False)}
    samples = {b: rationales(b) for b in (True, False)}
    med = _alternate(
        {
            "decode_padded": lambda: decode(False),
            "decode_bucketed": lambda: decode(True),
            "score_padded": lambda: scorers[False].score(prefix, suffixes, cands),
            "score_bucketed": lambda: scorers[True].score(prefix, suffixes, cands),
            "generate_padded": lambda: rationales(False),
            "generate_bucketed": lambda: rationales(True),
        },
        repeats,
    )
    return dict(
        eval_label_shape_prompts_batch_width_new_preamble=list(shape),
        eval_label_prompt_lengths=lengths.tolist(),
        eval_decode_groups=buckets.groups_for(batch),
        eval_decode_identical_texts=texts[True] == texts[False],
        label_score_max_diff=float(np.max(np.abs(scores[True] - scores[False]))),
        label_generate_identical_rationales=samples[True] == samples[False],
        **{f"eval_label_{k}_s": v for k, v in med.items()},
        eval_decode_bucketed_vs_padded_speedup=med["decode_padded"] / med["decode_bucketed"],
        label_score_bucketed_vs_padded_speedup=med["score_padded"] / med["score_bucketed"],
        label_generate_bucketed_vs_padded_speedup=(
            med["generate_padded"] / med["generate_bucketed"]
        ),
    )

"""Throughput benchmark: train step, last-token scoring, KV-cache sampling (DESIGN §6).

`rlaif-jax bench --preset bench_1b --json out.json` measures, on one device:

- train: AdamW step (fwd + bwd + update), fp32 master params, compute in the preset's
  dtype, batch 8 x 1024 -> tokens/s and MFU;
- score: candidate distribution at the last token, batch 32 x 1024 -> prompts/s;
- sample: batch 64, prompt 512, +128 new tokens at T = 0.9, all 128 steps forced
  -> new tokens/s (prefill included).

Each workload is compiled and warmed up, then timed `--repeats` times (median, with
`jax.block_until_ready`). Floors are what the device's ceilings allow: train = peak
FLOP/s / FLOPs per token; score = max(FLOPs / peak, weight bytes / HBM bandwidth);
sample = prefill FLOPs / peak + per step (bf16 weights + KV cache bytes at the mean
filled length) / HBM bandwidth. Ceilings come from `--device_peak_tflops` / `--hbm_bw`,
else a table of known devices, else (CPU) a quick matmul / copy measurement.

On small presets (tiny, toy_*) and on CPU the shapes shrink (see `SHAPES`), and on CPU
it also reports two ratios: cached vs uncached decoding (uncached re-runs the full
forward on the whole sequence every step) and shared-prefix vs plain scoring (a
preamble that is 3/4 of the prompt, as in labeling).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rlaif_jax import bench_rl
from rlaif_jax.decoding import sample as sample_lib
from rlaif_jax.decoding import score as score_lib
from rlaif_jax.models import config as config_lib
from rlaif_jax.models import model as model_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules
from rlaif_jax.train import losses

logger = logging.getLogger("rlaif_jax.bench")

# (batch, length) for train and score; (batch, prompt, new tokens) for sample.
SHAPES = {
    "full": dict(train=(8, 1024), score=(32, 1024), sample=(64, 512, 128)),
    "small": dict(train=(8, 128), score=(32, 128), sample=(16, 64, 32)),
    "tiny": dict(train=(4, 64), score=(8, 64), sample=(8, 32, 16)),
}

# Measured (DESIGN §6) or vendor dense bf16 peak TFLOP/s and HBM bytes/s, by device kind.
DEVICE_CEILINGS = {
    "H100": (782.0, 2.94e12),  # measured on an H100 80GB (DESIGN §6)
    "H200": (782.0, 4.8e12),
    "A100": (312.0, 2.0e12),
    "TPU v4": (275.0, 1.2e12),
    "TPU v5 lite": (197.0, 0.82e12),
    "TPU v5e": (197.0, 0.82e12),
    "TPU v5p": (459.0, 2.76e12),
    "TPU v6 lite": (918.0, 1.64e12),
}


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    jax.block_until_ready(fn())  # compile + warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_ceilings(dtype: str) -> tuple[float, float]:
    """(peak FLOP/s of a large matmul in `dtype`, bytes/s of a large copy) on this device."""
    n = 1024
    a = jnp.ones((n, n), dtype)
    mm = jax.jit(lambda x: x @ x)
    t = _median_time(lambda: mm(a), 5)
    flops = 2 * n**3 / t
    big = jnp.ones((32 * 1024 * 1024 // 4,), jnp.float32)  # 32 MiB
    add = jax.jit(lambda x: x + 1.0)
    t = _median_time(lambda: add(big), 5)
    return flops, 2 * big.nbytes / t  # read + write


def ceilings(args) -> tuple[float, float, str]:
    kind = jax.devices()[0].device_kind
    peak = args.device_peak_tflops * 1e12 if args.device_peak_tflops else None
    bw = args.hbm_bw if args.hbm_bw else None
    source = "flags"
    if peak is None or bw is None:
        known = next((v for k, v in DEVICE_CEILINGS.items() if k.lower() in kind.lower()), None)
        if known is not None:
            peak, bw, source = peak or known[0] * 1e12, bw or known[1], "table"
        else:
            m_peak, m_bw = measure_ceilings(args.dtype or "float32")
            peak, bw, source = peak or m_peak, bw or m_bw, "measured"
    return peak, bw, source


def _param_bytes(config: config_lib.ModelConfig, itemsize: int) -> float:
    return config_lib.num_params(config) * itemsize


def make_lm_train_step(config, opt: optax.GradientTransformation) -> Callable:
    """Jitted (params, opt_state, tokens [B, L]) -> (params, opt_state, loss): next-token
    cross-entropy over every position (`train.losses.next_token_loss`, SFT's loss), one
    optimizer update, params and state donated.
    The step `bench` and `bench/peers/train_vs_hf.py` time."""

    def loss_fn(p, toks):
        logits, _ = model_lib.apply(config, p, toks)
        return losses.next_token_loss(logits, toks, jnp.ones_like(toks))[0]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, toks):
        loss, grads = jax.value_and_grad(loss_fn)(p, toks)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    return step


def bench_train(config, params, shape, repeats: int, peak: float) -> dict:
    b, length = shape
    opt = optax.adamw(1e-4, weight_decay=0.0)
    opt_state = opt.init(params)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (b, length), 3, config.vocab_size)
    step = make_lm_train_step(config, opt)
    state = [params, opt_state]

    def run():
        state[0], state[1], loss = step(state[0], state[1], tokens)
        return loss

    t = _median_time(run, repeats)
    tok_s = b * length / t
    fpt = config_lib.flops_per_token(config, length, training=True)
    return dict(
        train_tokens_per_s=tok_s,
        train_mfu=tok_s * fpt / peak,
        train_tokens_per_s_floor=peak / fpt,
        train_step_s=t,
    )


def bench_score(config, params, shape, repeats: int, peak: float, bw: float) -> dict:
    b, length = shape
    toks = jax.random.randint(jax.random.PRNGKey(2), (b, length), 3, config.vocab_size)
    lengths = jnp.full((b,), length, jnp.int32)
    cands = jnp.array([3, 4], jnp.int32)
    fn = jax.jit(functools.partial(score_lib.candidate_distribution, config))
    t = _median_time(lambda: fn(params, toks, lengths, cands), repeats)
    # The unembedding runs at one position per row, not L.
    head = 2 * config.d_model * config.vocab_size
    flops = b * length * config_lib.flops_per_token(config, length, False) - b * (length - 1) * head
    itemsize = jnp.dtype(config.param_dtype).itemsize
    floor_t = max(flops / peak, _param_bytes(config, itemsize) / bw)
    return dict(score_prompts_per_s=b / t, score_prompts_per_s_floor=b / floor_t, score_s=t)


def _sample_floor_s(config, batch: int, prompt: int, new: int, peak: float, bw: float) -> float:
    prefill = batch * prompt * config_lib.flops_per_token(config, prompt, False) / peak
    kv_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * 2  # bf16
    mean_len = prompt + new / 2
    step_bytes = _param_bytes(config, 2) + batch * mean_len * kv_per_token
    return prefill + new * step_bytes / bw


def bench_sample(config, params, shape, repeats: int, peak: float, bw: float) -> dict:
    b, prompt, new = shape
    toks = jax.random.randint(jax.random.PRNGKey(3), (b, prompt), 3, config.vocab_size)
    lengths = jnp.full((b,), prompt, jnp.int32)
    kw = dict(max_new_tokens=new, temperature=0.9, eos_id=1, force_full_length=True)
    rng = jax.random.PRNGKey(4)
    t = _median_time(lambda: sample_lib.sample(config, params, toks, lengths, rng, **kw), repeats)
    floor_t = _sample_floor_s(config, b, prompt, new, peak, bw)
    return dict(
        sample_new_tokens_per_s=b * new / t,
        sample_new_tokens_per_s_floor=b * new / floor_t,
        sample_s=t,
    )


def uncached_decode(config, params, prompt_tokens, new: int, rng):
    """Reference decoder without a KV cache: the full forward over the whole (padded)
    sequence every step, logits at the last filled position. [B, Lp] -> [B, T]."""
    b, lp = prompt_tokens.shape
    seq = jnp.pad(prompt_tokens, ((0, 0), (0, new)))

    def body(t, carry):
        seq, key = carry
        key, sub = jax.random.split(key)
        mask = jnp.arange(lp + new)[None, :] < lp + t
        logits, _ = model_lib.apply(
            config, params, seq, attention_mask=jnp.broadcast_to(mask, seq.shape),
            logits_positions=jnp.full((b,), lp + t - 1, jnp.int32),
        )  # fmt: skip
        tok = jax.random.categorical(sub, logits / 0.9, axis=-1).astype(seq.dtype)
        return jax.lax.dynamic_update_slice_in_dim(seq, tok[:, None], lp + t, axis=1), key

    seq, _ = jax.lax.fori_loop(0, new, body, (seq, rng))
    return seq[:, lp:]


def bench_ratios(config, params, sample_shape, score_shape, repeats: int) -> dict:
    b, prompt, new = sample_shape
    toks = jax.random.randint(jax.random.PRNGKey(5), (b, prompt), 3, config.vocab_size)
    lengths = jnp.full((b,), prompt, jnp.int32)
    rng = jax.random.PRNGKey(6)
    kw = dict(max_new_tokens=new, temperature=0.9, eos_id=1, force_full_length=True)
    cached = _median_time(
        lambda: sample_lib.sample(config, params, toks, lengths, rng, **kw), repeats
    )
    unc = jax.jit(functools.partial(uncached_decode, config), static_argnums=2)
    uncached = _median_time(lambda: unc(params, toks, new, rng), repeats)

    sb, sl = score_shape
    p = 3 * sl // 4
    full = jax.random.randint(jax.random.PRNGKey(7), (sb, sl), 3, config.vocab_size)
    full = full.at[:, :p].set(full[0, :p])  # one preamble shared by every row
    cands = jnp.array([3, 4], jnp.int32)
    plain_fn = jax.jit(functools.partial(score_lib.candidate_distribution, config))
    shared_fn = jax.jit(functools.partial(score_lib.candidate_distribution_shared_prefix, config))
    plain = _median_time(
        lambda: plain_fn(params, full, jnp.full((sb,), sl, jnp.int32), cands), repeats
    )
    shared = _median_time(
        lambda: shared_fn(
            params, full[0, :p], full[:, p:], jnp.full((sb,), sl - p, jnp.int32), cands
        ),
        repeats,
    )
    return dict(
        cached_decode_s=cached,
        uncached_decode_s=uncached,
        cached_vs_uncached_decode_speedup=uncached / cached,
        plain_score_s=plain,
        shared_prefix_score_s=shared,
        shared_prefix_vs_plain_score_speedup=plain / shared,
        shared_prefix_fraction=p / sl,
    )


def _versions() -> dict:
    import flax

    return dict(jax_version=jax.__version__, flax_version=flax.__version__)


def run_bench(
    preset: str = "tiny",
    shapes: str = "auto",
    repeats: int = 3,
    device_peak_tflops: float | None = None,
    hbm_bw: float | None = None,
    ratios: bool | None = None,
    attention: str = "auto",
    workloads: tuple[str, ...] = ("train", "score", "sample"),
) -> dict:
    """Runs the benchmark on one device; returns the result dict (the JSON contract)."""
    backend = jax.default_backend()
    if preset not in config_lib.PRESETS:
        # The toy world's presets (toy_policy, toy_labeler) register when their module is
        # imported; the benchmark is not the real pipeline path, so it may reach for them.
        import rlaif_jax.toy.presets  # noqa: F401
    config = config_lib.get_config(preset)
    if attention == "auto":
        # cuDNN flash attention needs bf16/fp16 inputs; elsewhere XLA's einsums.
        half = config.dtype in ("bfloat16", "float16")
        attention = "cudnn" if backend == "gpu" and half else "xla"
    config = config.replace(attention_impl=attention)
    if shapes == "auto":
        shapes = "tiny" if preset == "tiny" else ("full" if backend != "cpu" else "small")
    if shapes not in SHAPES:
        raise ValueError(f"bench --shapes {shapes!r}: choose auto or one of {sorted(SHAPES)}.")
    shape = SHAPES[shapes]
    args = argparse.Namespace(
        device_peak_tflops=device_peak_tflops, hbm_bw=hbm_bw, dtype=config.dtype
    )
    peak, bw, source = ceilings(args)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    params, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, get_rules("dp"))
    out: dict[str, Any] = dict(
        preset=preset,
        shapes=dict(
            name=shapes,
            train_batch_length=list(shape["train"]),
            score_batch_length=list(shape["score"]),
            sample_batch_prompt_new=list(shape["sample"]),
        ),
        device_kind=jax.devices()[0].device_kind,
        backend=backend,
        attention_impl=config.attention_impl,
        compute_dtype=config.dtype,
        param_dtype=config.param_dtype,
        num_params=config_lib.num_params(config),
        peak_flops=peak,
        hbm_bytes_per_s=bw,
        ceilings_source=source,
        repeats=repeats,
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **_versions(),
    )
    if "score" in workloads:
        out.update(bench_score(config, params, shape["score"], repeats, peak, bw))
    if "sample" in workloads:
        out.update(bench_sample(config, params, shape["sample"], repeats, peak, bw))
    if ratios if ratios is not None else (backend == "cpu" and "sample" in workloads):
        out.update(bench_ratios(config, params, shape["sample"], shape["score"], repeats))
    if "buckets" in workloads:
        out.update(bench_rl.bench_buckets(config, params, repeats, bench_rl.BUCKET_SHAPES[shapes]))
    if "eval_label_buckets" in workloads:
        out.update(
            bench_rl.bench_eval_label_buckets(
                config, params, repeats, bench_rl.EVAL_LABEL_SHAPES[shapes]
            )
        )
    if "rl_step" in workloads:
        out.update(bench_rl.bench_rl_step(config, params, repeats, bench_rl.RL_STEP_SHAPES[shapes]))
    if "train" in workloads:  # last: it donates (consumes) the params
        out.update(bench_train(config, params, shape["train"], repeats, peak))
    return out


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="Model preset (models/config.py).")
    parser.add_argument("--json", default=None, help="Write the results to this JSON file.")
    parser.add_argument(
        "--shapes", default="auto", help="auto | full | small | tiny (auto: full off CPU)."
    )
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs (median).")
    parser.add_argument(
        "--attention", default="auto", help="auto | xla | cudnn | dpa (auto: cudnn on GPU)."
    )
    parser.add_argument(
        "--workload", default="train,score,sample",
        help="Comma-separated: train, score, sample, buckets (padded vs length-bucketed "
        "sampling/scoring), eval_label_buckets (the same for evaluation decoding and the "
        "labeler's scoring), rl_step (one RL step's time breakdown).",
    )  # fmt: skip
    parser.add_argument("--device_peak_tflops", type=float, default=None)
    parser.add_argument("--hbm_bw", type=float, default=None, help="HBM bytes/s.")
    parser.add_argument(
        "--ratios", action=argparse.BooleanOptionalAction, default=None,
        help="Cached/uncached decoding and shared-prefix ratios (default: on CPU only).",
    )  # fmt: skip


WORKLOADS = ("train", "score", "sample", "buckets", "eval_label_buckets", "rl_step")


def _workloads(text: str) -> tuple[str, ...]:
    names = tuple(w.strip() for w in text.split(",") if w.strip())
    bad = [w for w in names if w not in WORKLOADS]
    if bad or not names:
        raise ValueError(f"bench --workload {text!r}: choose from {', '.join(WORKLOADS)}.")
    return names


def run_stage(workdir: str | None = None, args: argparse.Namespace | None = None) -> dict:
    """CLI stage 'bench': runs `run_bench` from the parsed flags, logs and writes JSON."""
    if args is None:
        parser = argparse.ArgumentParser()
        _add_arguments(parser)
        args = parser.parse_args([])
    result = run_bench(
        preset=args.preset,
        shapes=args.shapes,
        repeats=args.repeats,
        device_peak_tflops=args.device_peak_tflops,
        hbm_bw=args.hbm_bw,
        ratios=args.ratios,
        attention=args.attention,
        workloads=_workloads(getattr(args, "workload", "train,score,sample")),
    )
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    path = args.json or (os.path.join(workdir, "bench.json") if workdir else None)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")
    return result


run_stage.add_arguments = _add_arguments

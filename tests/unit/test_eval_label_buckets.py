"""Length bucketing outside RL (issue #22): evaluation decoding
(`policy_decode.decode_policy`) and the labeler's scoring (`labeling.scoring.ModelScorer`)
give the padded path's outputs, at smaller widths, and the bench workload that times them
runs."""

from __future__ import annotations

import jax
import numpy as np

from rlaif_jax import bench_rl, policy_decode
from rlaif_jax.data.layout import InputLayout
from rlaif_jax.decoding import buckets
from rlaif_jax.decoding import sample as sample_lib
from rlaif_jax.labeling.scoring import ModelScorer
from rlaif_jax.models.config import ModelConfig
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

CONFIG = ModelConfig(
    vocab_size=128, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
    mlp_dim=64, dtype="float32", max_len=256,
)  # fmt: skip


def _model(devices: int = 1):
    mesh = make_mesh(devices, 1, 1, devices=jax.devices()[:devices])
    rules = get_rules("dp")
    params, _ = model_params.init_params(CONFIG, jax.random.PRNGKey(0), mesh, rules)
    return mesh, rules, params


def test_groups_for_keeps_rows_divisible_by_the_mesh():
    assert buckets.groups_for(64, 8) == 4
    assert buckets.groups_for(16, 8) == 2
    assert buckets.groups_for(8, 8) == 1
    assert buckets.groups_for(12, 1) == 4
    assert buckets.groups_for(6, 1, max_groups=4) == 3
    assert buckets.groups_for(7, 2) == 1


def test_decode_policy_bucketed_matches_padded_at_smaller_widths(monkeypatch):
    mesh, rules, params = _model(2)
    widths_seen = []
    make = sample_lib.make_sampler

    def spy(*a, **kw):
        run = make(*a, **kw)

        def wrapped(params, tokens, *rest, **k):
            widths_seen.append(tokens.shape)
            return run(params, tokens, *rest, **k)

        return wrapped

    monkeypatch.setattr(policy_decode.sample_lib, "make_sampler", spy)
    vocab = bench_rl._CharVocab(CONFIG.vocab_size)
    layout = InputLayout(max_context=32, max_response=4)
    rng = np.random.default_rng(0)
    prompts = [
        {"id": str(i), "context": "".join(chr(rng.integers(97, 123)) for _ in range(n))}
        for i, n in enumerate([3, 30, 9, 14, 12, 5, 7, 2])
    ]
    kw = dict(temperature=0.9, batch_size=8, seed=3, num_samples=2)  # one batch
    padded = policy_decode.decode_policy(
        CONFIG, params, vocab, layout, prompts, mesh, rules, bucketed=False, **kw
    )
    padded_shapes, widths_seen[:] = list(widths_seen), []
    got = policy_decode.decode_policy(CONFIG, params, vocab, layout, prompts, mesh, rules, **kw)
    assert got == padded and len(got) == 16
    assert padded_shapes == [(8, 32)]
    # 2 devices: 8 rows -> 4 groups of 2; all but the longest run at 16 columns.
    assert widths_seen == [(2, 16), (2, 16), (2, 16), (2, 32)]


def test_model_scorer_length_buckets_match_the_padded_window():
    mesh, rules, params = _model()
    rng = np.random.default_rng(1)
    prefix = rng.integers(3, CONFIG.vocab_size, 12).tolist()
    suffixes = [rng.integers(3, CONFIG.vocab_size, int(n)).tolist() for n in (5, 9, 3, 2)]
    out = {}
    for b in (True, False):
        sc = ModelScorer(CONFIG, params, mesh, rules, batch_size=4, max_len=64, length_buckets=b)
        out[b] = sc.score(prefix, suffixes, [3, 4])
        assert sc._bucket(9, 52) == (16 if b else 52)
        gen = dict(max_new_tokens=3, temperature=0.9, top_k=0, num_samples=1, seed=2)
        out[b, "gen"] = sc.generate(prefix, suffixes, **gen)
    np.testing.assert_allclose(out[True], out[False], atol=2e-5)
    assert out[True, "gen"] == out[False, "gen"]


def test_eval_label_buckets_is_a_bench_workload():
    from rlaif_jax import bench

    assert bench._workloads("buckets,eval_label_buckets") == ("buckets", "eval_label_buckets")
    assert set(bench_rl.EVAL_LABEL_SHAPES) == set(bench_rl.BUCKET_SHAPES)


def test_make_sampler_reuses_one_sampler_per_setting():
    mesh, rules = make_mesh(1, 1, 1, devices=jax.devices()[:1]), get_rules("dp")
    kw = dict(max_new_tokens=4, temperature=0.9, eos_id=[1, 1], pad_id=0)
    first = sample_lib.make_sampler(CONFIG, mesh, rules, **kw)
    assert sample_lib.make_sampler(CONFIG, mesh, rules, **{**kw, "eos_id": 1}) is first
    assert sample_lib.make_sampler(CONFIG, mesh, rules, **{**kw, "temperature": 0.0}) is not first


def test_model_scorer_generate_over_8_devices_matches_one_device():
    """Rationales sampled with the prompts sharded over 8 devices are the 1-device ones
    (same random stream per prompt), and each prompt gets its samples when a call's share
    (batch_size // num_samples) is under one prompt per device."""
    rng = np.random.default_rng(4)
    prefix = rng.integers(3, CONFIG.vocab_size, 10).tolist()
    suffixes = [
        rng.integers(3, CONFIG.vocab_size, int(n)).tolist() for n in rng.integers(2, 20, 11)
    ]
    gen = dict(max_new_tokens=4, temperature=0.9, top_k=0, num_samples=1, seed=5)
    out = {}
    for devices in (1, 8):
        mesh, rules, params = _model(devices)
        sc = ModelScorer(CONFIG, params, mesh, rules, batch_size=8, max_len=64)
        out[devices] = sc.generate(prefix, suffixes, **gen)
    assert out[8] == out[1]
    assert [len(s) for s in out[1]] == [1] * len(suffixes)
    mesh, rules, params = _model(8)
    sc = ModelScorer(CONFIG, params, mesh, rules, batch_size=8, max_len=64)
    four = sc.generate(prefix, suffixes, **{**gen, "num_samples": 4})  # 2 prompts/call -> 8
    assert [len(s) for s in four] == [4] * len(suffixes)
    assert all(len(t) <= 4 for s in four for t in s)


def test_eval_label_buckets_workload_runs_and_matches():
    """The bench workload at its tiny shape: bucketed and padded give the same texts,
    scores and rationales, and every timing is reported."""
    mesh, rules, params = _model()
    out = bench_rl.bench_eval_label_buckets(
        CONFIG, params, repeats=1, shape=bench_rl.EVAL_LABEL_SHAPES["tiny"]
    )
    assert out["eval_decode_identical_texts"] and out["label_generate_identical_rationales"]
    assert out["label_score_max_diff"] < 2e-5
    for path in ("decode", "score", "generate"):
        for mode in ("padded", "bucketed"):
            assert out[f"eval_label_{path}_{mode}_s"] > 0
    assert out["label_generate_bucketed_vs_padded_speedup"] > 0

"""`rlaif-jax bench --preset tiny --json PATH` runs quickly and writes the contract keys."""

import json
import math

import jax
import pytest

from rlaif_jax import bench_rl, cli
from rlaif_jax.models import config as config_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules

CONTRACT = (
    "train_tokens_per_s",
    "train_mfu",
    "train_tokens_per_s_floor",
    "score_prompts_per_s",
    "score_prompts_per_s_floor",
    "sample_new_tokens_per_s",
    "sample_new_tokens_per_s_floor",
)


def test_bench_cli_writes_contract_keys(tmp_path):
    path = tmp_path / "out.json"
    rc = cli.main(["bench", "--preset", "tiny", "--json", str(path), "--repeats", "1"])
    assert rc == 0
    result = json.loads(path.read_text())
    for key in CONTRACT:
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert 0 < result["train_mfu"] < 1
    for key in ("device_kind", "jax_version", "flax_version", "date", "shapes"):
        assert result[key], key
    assert result["preset"] == "tiny"
    # The ratios are reported; their values are timings of a tiny model with one repeat
    # on a shared CPU (under load the cached decode lost once, 0.90x), so their size is
    # the bench record's business (bench/RESULTS.md), not a unit test's.
    for key in ("cached_vs_uncached_decode_speedup", "shared_prefix_vs_plain_score_speedup"):
        assert math.isfinite(result[key]) and result[key] > 0, key


def test_bench_rl_step_workload(tmp_path):
    """`--workload rl_step`: the RL step's four parts with shares that fit in the step."""
    path = tmp_path / "out.json"
    argv = ["bench", "--preset", "tiny", "--workload", "rl_step", "--repeats", "1"]
    assert cli.main([*argv, "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert "train_tokens_per_s" not in result  # only the named workloads ran
    shares = [result[f"rl_step_time_{p}_share"] for p in ("rollout", "reward", "forward", "update")]
    assert all(0 <= s <= 1 for s in shares) and sum(shares) <= 1 + 1e-6, shares
    assert result["rl_step_loop_tokens_per_s"] > 0


def test_bench_buckets_reports_identical_outputs_and_ratios():
    config = config_lib.get_config("tiny")
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    params, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, get_rules("dp"))
    result = bench_rl.bench_buckets(config, params, 1, shape=(4, 32, 4, 1), groups=(2,))
    assert result["bucketed_g2_identical_tokens"] is True
    assert result["bucketed_g2_max_logprob_diff"] < 1e-4
    assert result["bucketed_g2_max_score_diff"] < 1e-4
    for kind in ("sample", "score"):
        assert result[f"bucketed_g2_vs_padded_{kind}_speedup"] > 0


def test_bench_refuses_unknown_workload():
    with pytest.raises(ValueError, match="rl_step"):
        cli.main(["bench", "--preset", "tiny", "--workload", "sampling"])

"""`rlaif-jax bench --preset tiny --json PATH` runs quickly and writes the contract keys."""

import json
import math

from rlaif_jax import cli

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

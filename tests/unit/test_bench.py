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
    # CPU: the ratios are reported, and the KV cache beats re-running the full forward.
    assert result["cached_vs_uncached_decode_speedup"] > 1
    assert result["shared_prefix_vs_plain_score_speedup"] > 0

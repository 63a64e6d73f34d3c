"""The sweep launcher on the real toy world: two labeler-prompt variants of the paper's
alignment ablation, each a real `rlaif-jax pipeline` run (SFT, pairs sampled from it, the
labeler bootstrap from it and the label stage, at toy-tiny size) in its own workdir, gathered into one table."""

from __future__ import annotations

import json
import shlex
import sys

import pytest

from rlaif_jax import sweep

STEPS = (
    "[('sft','sft','sft'),('sample_pairs','sample_pairs','policy_pairs'),"
    "('bootstrap_labeler','bootstrap_labeler','labeler'),('label','label','labels')]"
)


@pytest.mark.slow
def test_sweep_of_two_labeler_variants_on_the_toy_world(tmp_path, capsys):
    base = tmp_path / "sweep"
    rc = sweep.main(
        [
            "pipeline",
            f"--base_workdir={base}",
            f"--command={shlex.quote(sys.executable)} -m rlaif_jax.cli",
            "--metrics_file=labels/metrics.json",
            "--variant=base:--gin.prompt_variant.preamble=\"'base'\"",
            # The Detailed preamble is ~800 pieces of the tiny vocab: a longer labeler window.
            "--variant=detailed:--gin.prompt_variant.preamble=\"'detailed'\" "
            "--gin.LabelerSettings.max_len=1280 --gin.labeler_from_checkpoint.max_len=1280",
            "--keys=labeler_alignment*,num_alignment_pairs",
            "--jobs=1",
            "--",
            "--gin_file=experiments/demo.gin",
            "--gin_file=test/toy_tiny.gin",
            f"--gin.pipeline.steps={STEPS}",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out
    table = json.loads((base / "sweep.json").read_text())
    rows = {r["variant"]: r for r in table["rows"]}
    assert sorted(rows) == ["base", "detailed"]
    for name, row in rows.items():
        assert row["status"] == "ok", (name, (base / "sweep_logs" / f"{name}.log").read_text())
        assert row["num_alignment_pairs"] > 0
        for key in ("labeler_alignment", "labeler_alignment_single_order"):
            assert 0.0 <= row[key] <= 1.0, (name, key, row[key])
        # Each run used its own workdir and wrote the gin config it ran with.
        config = (base / name / "config.gin").read_text()
        assert f"prompt_variant.preamble = '{name}'" in config
        assert not (base / name / "rm_ai").exists()  # only the swept steps ran
    md = (base / "sweep.md").read_text()
    assert "| base | ok |" in md and "| detailed | ok |" in md
    assert "labeler_alignment" in md.splitlines()[0]

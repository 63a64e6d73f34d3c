"""The toy labeler recipe (gin/experiments/toy_labeler_release.gin) at unit-test size
through the CLI: every step completes and every binding of the composition configures a
stage (`gin_utils.unused_bindings`). The demo and toy_arms compositions are checked the
same way in tests/integration/test_pipeline_smoke.py."""

import pytest

from rlaif_jax import artifacts, cli, gin_utils


@pytest.mark.slow
def test_toy_labeler_release_recipe_uses_every_binding(tmp_path):
    args = [
        "pipeline",
        "--gin_file=experiments/toy_labeler_release.gin",
        "--gin_file=test/toy_tiny.gin",
        f"--workdir={tmp_path}",
    ]
    assert cli.main(args) == 0
    assert gin_utils.unused_bindings() == []
    for step in ("sft", "policy_pairs", "labeler", "labels", "rm_ai", "rl_rlaif", "report"):
        assert artifacts.is_complete(str(tmp_path / step)), step

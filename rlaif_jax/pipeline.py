"""`rlaif-jax pipeline`: every stage of an experiment in order, from one gin file.

Steps are (stage, gin scope, output dir). A step whose output dir holds a COMPLETE
marker is skipped; a partial one resumes from its own checkpoints or shards. Each
step runs inside its gin scope, so one file configures e.g. two reward models
(`rm_ai/` and `rm_human/`) and two RL runs (`rl_rlaif/`, `rl_rlhf/`).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Sequence

import gin

from rlaif_jax import artifacts, cli, configurables
from rlaif_jax.data import records

logger = logging.getLogger("rlaif_jax.pipeline")

# The toy demo's order (DESIGN §1): each row is (stage, gin scope, output dir).
DEMO_STEPS = (
    ("sft", "sft", "sft"),
    ("sample_pairs", "sample_pairs", "policy_pairs"),
    ("bootstrap_labeler", "bootstrap_labeler", "labeler"),
    ("label", "label", records.LABEL_DIR),
    ("reward", "rm_ai", "rm_ai"),
    ("reward", "rm_human", "rm_human"),
    ("rl", "rl_rlaif", "rl_rlaif"),
    ("rl", "rl_rlhf", "rl_rlhf"),
    ("evaluate", "evaluate", "report"),
)


def _check_steps(steps: Sequence[Sequence[str]]) -> None:
    for i, step in enumerate(steps):
        if len(step) != 3:
            raise ValueError(
                f"pipeline.run_stage.steps[{i}] = {step!r}: each step is (stage, scope, output_dir)."
            )
        if step[0] not in cli.STAGES:
            raise ValueError(
                f"pipeline.run_stage.steps[{i}] names unknown stage {step[0]!r}; "
                f"stages: {sorted(cli.STAGES)}."
            )


@gin.configurable("pipeline")
def run_stage(
    workdir: str = gin.REQUIRED,
    steps: Sequence[Sequence[str]] = DEMO_STEPS,
    stop_after: str | None = None,
) -> None:
    """Runs `steps` in order, skipping complete ones; `stop_after` ends after that output dir."""
    _check_steps(steps)
    start = time.time()
    for stage, scope, output in steps:
        stage_dir = os.path.join(workdir, output)
        if artifacts.is_complete(stage_dir):
            logger.info(
                "pipeline: %s (%s) already complete in %s; skipping", stage, scope, stage_dir
            )
        else:
            logger.info("pipeline: running %s in scope %s -> %s", stage, scope, stage_dir)
            # A stage module the gin files did not import registers its configurables now
            # (none of them bound: gin refuses bindings of unknown configurables at parse).
            with gin.unlock_config():
                module = importlib.import_module(cli.STAGES[stage][0])
            t0 = time.time()
            # Each step runs in its own scope only (not nested under 'pipeline/'), and its
            # mesh, rules, data, optimizer and settings are built there too.
            with gin.config_scope(None), gin.config_scope(scope):
                entry = module.run_stage
                entry(workdir=workdir, **configurables.stage_objects(entry))
            logger.info("pipeline: %s done in %.1f s", output, time.time() - t0)
        if stop_after == output:
            break
    logger.info("pipeline: finished in %.1f s", time.time() - start)

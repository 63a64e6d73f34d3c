#!/usr/bin/env bash
# Ablation sweep: runs gin-override variants of a stage and tabulates their metrics.
# A thin wrapper over `python -m rlaif_jax.sweep` (see its --help and launch/README.md):
#
#   launch/sweep.sh pipeline --base_workdir=workdir/sweep --sweep_file=sweeps/kl.yaml \
#       -- --gin_file=gin/experiments/demo.gin
#   launch/sweep.sh rl --base_workdir=gs://b/sweep --launcher=tpu \
#       --tpu_args='--name rlaif-v4 --zone us-central2-b --restart_on_preemption' \
#       --variant=kl_low:'--gin.KL_COEF=0.01' --variant=kl_high:'--gin.KL_COEF=0.1' --dry_run
set -euo pipefail
# The repo on the import path for a checkout that is not pip-installed; cwd is kept, so
# relative sweep files and workdirs mean what they say.
PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
exec "${PYTHON:-python3}" -m rlaif_jax.sweep "$@"

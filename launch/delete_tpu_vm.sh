#!/usr/bin/env bash
# Deletes a Cloud TPU VM (no-op when it does not exist). The workdir on GCS is kept.
#
#   launch/delete_tpu_vm.sh --name rlaif-v4 --zone us-central2-b [--project P] [--dry_run]
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) echo "usage: $0 --name NAME --zone ZONE [--project P] [--dry_run]"; exit 0 ;;
  esac
  parse_tpu_flag "$@"
  [[ $CONSUMED -gt 0 ]] || die "unknown flag $1 (see --help)"
  shift "$CONSUMED"
done
require_tpu_identity
scope_args

if [[ $DRY_RUN == 0 ]]; then
  tpu_state
  if [[ $TPU_STATE == NOT_FOUND ]]; then
    log "TPU VM $TPU_NAME in $ZONE does not exist; nothing to delete."
    exit 0
  fi
fi
run "$GCLOUD" compute tpus tpu-vm delete "$TPU_NAME" "${SCOPE_ARGS[@]}" --quiet

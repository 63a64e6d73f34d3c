#!/usr/bin/env bash
# Creates a Cloud TPU VM (skipped when one with that name is already READY).
#
#   launch/create_tpu_vm.sh --name rlaif-v4 --zone us-central2-b --accelerator_type v4-8 \
#       [--version tpu-ubuntu2204-base] [--spot|--preemptible] [--project P] [--dry_run] \
#       [-- EXTRA gcloud create flags, e.g. --network=N --service-account=SA]
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  echo "usage: $0 --name NAME --zone ZONE [flags] [-- EXTRA_GCLOUD_CREATE_FLAGS]"
  tpu_flags_help
}

EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
  esac
  parse_tpu_flag "$@"
  [[ $CONSUMED -gt 0 ]] || die "unknown flag $1 (see --help)"
  shift "$CONSUMED"
done
require_tpu_identity
scope_args

tpu_state
if [[ $TPU_STATE == READY && $DRY_RUN == 0 ]]; then
  log "TPU VM $TPU_NAME in $ZONE is already READY; not creating it."
  exit 0
fi
if [[ $TPU_STATE != NOT_FOUND && $DRY_RUN == 0 ]]; then
  die "TPU VM $TPU_NAME exists in state $TPU_STATE; delete it first (launch/delete_tpu_vm.sh)."
fi

cmd=("$GCLOUD" compute tpus tpu-vm create "$TPU_NAME" "${SCOPE_ARGS[@]}"
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
if [[ -n $CAPACITY ]]; then
  cmd+=("--$CAPACITY")
fi
run "${cmd[@]}" "${EXTRA[@]}"

#!/usr/bin/env bash
# Deletes a queued resource and its TPU VM (no-op when it does not exist). The workdir on
# GCS is kept.
#
#   launch/delete_queued_resource.sh --name rlaif-v6e --zone us-east5-b [--qr_name ID] \
#       [--project P] [--dry_run]
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      echo "usage: $0 --name NAME --zone ZONE [--qr_name ID] [--project P] [--dry_run]"
      exit 0
      ;;
  esac
  parse_qr_flag "$@"
  if [[ $CONSUMED == 0 ]]; then
    parse_tpu_flag "$@"
  fi
  [[ $CONSUMED -gt 0 ]] || die "unknown flag $1 (see --help)"
  shift "$CONSUMED"
done
require_tpu_identity
require_qr_identity
scope_args

if [[ $DRY_RUN == 0 ]]; then
  qr_state
  if [[ $QR_STATE == NOT_FOUND ]]; then
    log "queued resource $QR_NAME in $ZONE does not exist; nothing to delete."
    exit 0
  fi
fi
# --force deletes the TPU VM first; without it an ACTIVE request cannot be deleted.
run "$GCLOUD" compute tpus queued-resources delete "$QR_NAME" "${SCOPE_ARGS[@]}" --force --quiet

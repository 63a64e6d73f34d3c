#!/usr/bin/env bash
# Requests a TPU VM through a queued resource (how v5e/v6e capacity, spot and
# reservations are obtained), then waits until the request is ACTIVE.
#
#   launch/create_queued_resource.sh --name rlaif-v6e --zone us-east5-b \
#       --accelerator_type v6e-8 [--version v2-alpha-tpuv6e] [--spot|--reserved] \
#       [--valid_until_duration 6h] [--qr_name ID] [--no_wait] [--project P] [--dry_run] \
#       [-- EXTRA gcloud create flags, e.g. --network=N --service-account=SA]
#
# The request is skipped when the queued resource already exists and is still queued or
# ACTIVE (then it only waits); a FAILED or SUSPENDED one must be deleted first.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<EOF2
usage: $0 --name NAME --zone ZONE --accelerator_type TYPE [flags] [-- EXTRA_GCLOUD_FLAGS]
  --no_wait                   return once the request is queued, without waiting for ACTIVE
EOF2
  qr_flags_help
  tpu_flags_help
}

WAIT=1
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --no_wait) WAIT=0; shift; continue ;;
    --) shift; EXTRA=("$@"); break ;;
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

create=1
if [[ $DRY_RUN == 0 ]]; then
  qr_state
  case "$QR_STATE" in
    NOT_FOUND) ;;
    CREATING | ACCEPTED | WAITING_FOR_RESOURCES | PROVISIONING | ACTIVE)
      log "queued resource $QR_NAME already exists ($QR_STATE); not requesting it again."
      create=0
      ;;
    *)
      die "queued resource $QR_NAME exists in state $QR_STATE; delete it first" \
        "(launch/delete_queued_resource.sh --qr_name $QR_NAME ...)."
      ;;
  esac
fi

if [[ $create == 1 ]]; then
  cmd=("$GCLOUD" compute tpus queued-resources create "$QR_NAME" "${SCOPE_ARGS[@]}"
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE"
    --runtime-version="$RUNTIME_VERSION")
  if [[ $CAPACITY == spot ]]; then
    cmd+=(--spot)
  elif [[ $RESERVED == 1 ]]; then
    cmd+=(--reserved)
  fi
  if [[ -n $VALID_UNTIL ]]; then
    cmd+=(--valid-until-duration="$VALID_UNTIL")
  fi
  run "${cmd[@]}" "${EXTRA[@]}"
fi

if [[ $WAIT == 1 ]]; then
  wait_qr_active
fi

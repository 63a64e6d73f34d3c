#!/usr/bin/env bash
# One `rlaif-jax` command on a TPU VM obtained through a queued resource, from nothing to
# nothing: request it (create_queued_resource.sh), wait until ACTIVE, set up every worker
# (setup_tpu_vm.sh), run the command on all of them (run_tpu_vm.sh), then delete the
# queued resource and its VM (delete_queued_resource.sh), also when a step fails.
#
#   launch/run_queued_resource.sh --name rlaif-v6e --zone us-east5-b --accelerator_type v6e-8 \
#       --spot [--valid_until_duration 6h] [--restart_on_preemption] [--keep] -- \
#       pipeline --gin_file=gin/experiments/demo.gin --workdir=gs://my-bucket/demo
#
# Preemption: a spot VM that is preempted leaves its queued resource SUSPENDING/SUSPENDED.
# With --restart_on_preemption the script deletes it, requests it again, sets it up and
# re-runs the same command (the stages resume from the gs:// workdir); without it, it
# deletes it and exits, and re-running the same command resumes.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<EOF2
usage: $0 --name NAME --zone ZONE --accelerator_type TYPE [flags] -- STAGE [rlaif-jax flags ...]
  --keep                      do not delete the queued resource at the end
  --restart_on_preemption     request it again, set up and re-run when it is preempted
  --max_restarts N            give up after N recoveries [10]
  --setup_arg ARG             extra word for setup_tpu_vm.sh (repeatable), e.g. --setup_arg=--source=git
  --run_arg ARG               extra word for run_tpu_vm.sh (repeatable), e.g. --run_arg=--env=K=V
  --simulate_preemption N     with --dry_run: the first N runs fail as if preempted
EOF2
  qr_flags_help
  tpu_flags_help
}

KEEP=0
RESTART=0
MAX_RESTARTS=10
SIMULATE=0
SETUP_ARGS=()
RUN_ARGS=()
JAX_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --) shift; JAX_ARGS=("$@"); break ;;
    --keep) KEEP=1; shift; continue ;;
    --restart_on_preemption) RESTART=1; shift; continue ;;
  esac
  flag=$1
  if [[ $flag == --*=* ]]; then
    value=${flag#*=}; flag=${flag%%=*}; n=1
  else
    value=${2-}; n=2
  fi
  case "$flag" in
    --max_restarts) MAX_RESTARTS=$value ;;
    --setup_arg) SETUP_ARGS+=("$value") ;;
    --run_arg) RUN_ARGS+=("$value") ;;
    --simulate_preemption) SIMULATE=$value ;;
    *)
      parse_qr_flag "$@"
      if [[ $CONSUMED == 0 ]]; then
        parse_tpu_flag "$@"
      fi
      [[ $CONSUMED -gt 0 ]] || die "unknown flag $1 (see --help; rlaif-jax flags go after --)"
      shift "$CONSUMED"
      continue
      ;;
  esac
  [[ $n == 1 || $# -ge 2 ]] || die "flag $flag needs a value"
  shift "$n"
done
require_tpu_identity
require_qr_identity
scope_args
[[ ${#JAX_ARGS[@]} -gt 0 ]] || die "no rlaif-jax command: put STAGE and its flags after --"
for v in "$MAX_RESTARTS" "$SIMULATE"; do
  [[ $v =~ ^[0-9]+$ ]] || die "expected a non-negative integer, got '$v'"
done
for a in "${RUN_ARGS[@]}"; do
  case "$a" in
    --restart_on_preemption | --ensure_vm | --simulate_preemption*)
      die "--run_arg $a: this script creates, recovers and deletes the VM itself" ;;
  esac
done
if [[ $SIMULATE -gt 0 && $DRY_RUN == 0 ]]; then
  die "--simulate_preemption only works with --dry_run"
fi
identity_flags
qr_flags

# Runs a sibling launch script; with --dry_run it is printed and then run in its own
# dry-run mode, so its gcloud commands are shown too.
run_script() {
  run "$@"
  if [[ $DRY_RUN == 1 ]]; then
    "$@"
  fi
}

# The queued resource costs money while it exists: delete it on every way out (a failed
# wait, a failed run, Ctrl-C) unless --keep.
REQUESTED=0
cleanup() {
  local rc=$?
  trap - EXIT
  if [[ $REQUESTED == 1 && $KEEP == 0 ]]; then
    log "deleting queued resource $QR_NAME and its TPU VM $TPU_NAME"
    run_script "$LAUNCH_DIR/delete_queued_resource.sh" "${IDENTITY_FLAGS[@]}" "${QR_FLAGS[@]}" ||
      log "delete failed: run launch/delete_queued_resource.sh --name $TPU_NAME --zone $ZONE" \
        "--qr_name $QR_NAME yourself"
  elif [[ $REQUESTED == 1 ]]; then
    log "--keep: queued resource $QR_NAME (TPU VM $TPU_NAME) is left running; delete it with" \
      "launch/delete_queued_resource.sh --name $TPU_NAME --zone $ZONE --qr_name $QR_NAME"
  fi
  exit "$rc"
}
trap cleanup EXIT

restarts=0
while true; do
  REQUESTED=1
  run_script "$LAUNCH_DIR/create_queued_resource.sh" "${IDENTITY_FLAGS[@]}" "${QR_FLAGS[@]}"
  run_script "$LAUNCH_DIR/setup_tpu_vm.sh" "${IDENTITY_FLAGS[@]}" "${SETUP_ARGS[@]}"
  run_cmd=("$LAUNCH_DIR/run_tpu_vm.sh" "${IDENTITY_FLAGS[@]}" "${RUN_ARGS[@]}")
  if [[ $SIMULATE -gt 0 ]]; then
    run_cmd+=(--simulate_preemption=1)
  fi
  rc=0
  run_script "${run_cmd[@]}" -- "${JAX_ARGS[@]}" || rc=$?
  if [[ $rc == 0 ]]; then
    log "done: rlaif-jax ${JAX_ARGS[0]} finished on every worker of $TPU_NAME"
    exit 0
  fi
  if [[ $SIMULATE -gt 0 ]]; then
    SIMULATE=$((SIMULATE - 1))
    DRY_RUN_QR_STATE=SUSPENDED
  fi
  qr_state
  tpu_state
  DRY_RUN_QR_STATE=ACTIVE
  if [[ $QR_STATE == ACTIVE && $TPU_STATE == READY && $rc != 255 ]]; then
    log "rlaif-jax failed (exit $rc) on an ACTIVE queued resource: not a preemption"
    exit "$rc"
  fi
  log "run interrupted (exit $rc; queued resource $QR_STATE, VM $TPU_STATE): preempted or" \
    "unreachable"
  if [[ $RESTART == 0 ]]; then
    log "re-run this same command (or pass --restart_on_preemption) to resume from the workdir"
    exit "$rc"
  fi
  restarts=$((restarts + 1))
  if [[ $restarts -gt $MAX_RESTARTS ]]; then
    log "giving up after $MAX_RESTARTS recoveries"
    exit "$rc"
  fi
  log "recovery $restarts/$MAX_RESTARTS: requesting $QR_NAME again, then re-running the same command"
  # A suspended queued resource never comes back: delete it before asking again.
  run_script "$LAUNCH_DIR/delete_queued_resource.sh" "${IDENTITY_FLAGS[@]}" "${QR_FLAGS[@]}"
done

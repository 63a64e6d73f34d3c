#!/usr/bin/env bash
# Runs one `rlaif-jax` command (any stage, or the pipeline) on every worker of a TPU VM,
# streams the output, keeps per-worker logs, and optionally survives preemption.
#
#   launch/run_tpu_vm.sh --name rlaif-v4 --zone us-central2-b [flags] -- \
#       pipeline --gin_file=gin/experiments/demo.gin --gin.NUM_STEPS=100 --workdir=gs://b/demo
#
# Everything after `--` is passed to rlaif-jax unchanged (quoting kept), on every worker,
# with `--multihost` appended. Output lines carry a `[worker N]` prefix; local copies go to
# LOG_DIR/all.log and LOG_DIR/worker_N.log, remote ones to ~/rlaif_logs/worker_N.log.
#
# Preemption: when the command fails and the VM is not READY (PREEMPTED, TERMINATED,
# STOPPED, gone) or ssh itself failed (exit 255), --restart_on_preemption waits for the VM,
# recreates or restarts it, re-runs setup_tpu_vm.sh, and re-runs the same command; the
# stages resume from the checkpoints and shards in the workdir (use gs:// for a pod).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<EOF2
usage: $0 --name NAME --zone ZONE [flags] -- STAGE [rlaif-jax flags ...]
  --restart_on_preemption   recreate/restart the VM, set it up and re-run on preemption
  --max_restarts N          give up after N recoveries [10]
  --poll_seconds S          VM state polling interval while it is not READY [60]
  --wait_timeout S          longest wait for a VM to become READY [7200]
  --ensure_vm               create the VM when missing and run setup before the first run
  --setup_arg ARG           extra word for setup_tpu_vm.sh (repeatable), e.g. --setup_arg=--source=git
  --env KEY=VALUE           environment variable for rlaif-jax on every worker (repeatable)
  --log_dir DIR             local log directory [logs/tpu/NAME]
  --remote_log_dir DIR      remote log directory, relative to home [rlaif_logs]
  --no_multihost            do not append --multihost
  --simulate_preemption N   with --dry_run: the first N runs fail as if preempted
EOF2
  tpu_flags_help
}

RESTART=0
MAX_RESTARTS=10
POLL_SECONDS=60
WAIT_TIMEOUT=7200
ENSURE_VM=0
SETUP_ARGS=()
ENVS=()
LOG_DIR=""
REMOTE_LOG_DIR=rlaif_logs
MULTIHOST=1
SIMULATE=0
JAX_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --) shift; JAX_ARGS=("$@"); break ;;
    --restart_on_preemption) RESTART=1; shift; continue ;;
    --ensure_vm) ENSURE_VM=1; shift; continue ;;
    --no_multihost) MULTIHOST=0; shift; continue ;;
  esac
  flag=$1
  if [[ $flag == --*=* ]]; then
    value=${flag#*=}; flag=${flag%%=*}; n=1
  else
    value=${2-}; n=2
  fi
  case "$flag" in
    --max_restarts) MAX_RESTARTS=$value ;;
    --poll_seconds) POLL_SECONDS=$value ;;
    --wait_timeout) WAIT_TIMEOUT=$value ;;
    --setup_arg) SETUP_ARGS+=("$value") ;;
    --env) ENVS+=("$value") ;;
    --log_dir) LOG_DIR=$value ;;
    --remote_log_dir) REMOTE_LOG_DIR=$value ;;
    --simulate_preemption) SIMULATE=$value ;;
    *)
      parse_tpu_flag "$@"
      [[ $CONSUMED -gt 0 ]] || die "unknown flag $1 (see --help; rlaif-jax flags go after --)"
      shift "$CONSUMED"
      continue
      ;;
  esac
  [[ $n == 1 || $# -ge 2 ]] || die "flag $flag needs a value"
  shift "$n"
done
require_tpu_identity
scope_args
[[ ${#JAX_ARGS[@]} -gt 0 ]] || die "no rlaif-jax command: put STAGE and its flags after --"
for v in "$MAX_RESTARTS" "$POLL_SECONDS" "$WAIT_TIMEOUT" "$SIMULATE"; do
  [[ $v =~ ^[0-9]+$ ]] || die "expected a non-negative integer, got '$v'"
done
if [[ $SIMULATE -gt 0 && $DRY_RUN == 0 ]]; then
  die "--simulate_preemption only works with --dry_run"
fi
for e in "${ENVS[@]}"; do
  [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env expects KEY=VALUE, got '$e'"
done
if [[ $MULTIHOST == 1 ]]; then
  has_multihost=0
  for a in "${JAX_ARGS[@]}"; do
    [[ $a == --multihost ]] && has_multihost=1
  done
  [[ $has_multihost == 1 ]] || JAX_ARGS+=(--multihost)
fi
for a in "${JAX_ARGS[@]}"; do
  if [[ $a == --workdir=* && $a != --workdir=gs://* ]]; then
    log "warning: workdir ${a#--workdir=} is on each worker's local disk; a multi-host run" \
      "needs shared storage (gs://) for checkpoints, and a recreated VM starts empty."
  fi
done
LOG_DIR=${LOG_DIR:-logs/tpu/$TPU_NAME}
identity_flags

# The command every worker runs: the venv, the repo as cwd (relative gin paths work), the
# worker number from the metadata server, output tee'd to the worker's log and prefixed.
R=$(printf '%q' "$REMOTE_REPO_DIR")
V=$(printf '%q' "$REMOTE_VENV")
L=$(printf '%q' "$REMOTE_LOG_DIR")
env_words=""
for e in "${ENVS[@]}"; do
  env_words+="export $(printf '%q' "$e"); "
done
# shellcheck disable=SC2016  # expanded on the worker, not here
worker_id='w=$(curl -sf -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number 2>/dev/null || hostname)'
remote="set -o pipefail; cd \"\$HOME\" && source $V/bin/activate && mkdir -p $L && $worker_id; log=\"\$HOME\"/$L/worker_\$w.log; ${env_words}cd $R && $(quote_cmd rlaif-jax "${JAX_ARGS[@]}") 2>&1 | tee -a \"\$log\" | sed -u \"s/^/[worker \$w] /\""
SSH_CMD=("$GCLOUD" compute tpus tpu-vm ssh "$TPU_NAME" "${SCOPE_ARGS[@]}" --worker=all
  "--ssh-flag=-o ServerAliveInterval=60" --command="$remote")

# Runs the command once; returns its exit status.
run_once() {
  if [[ $DRY_RUN == 1 ]]; then
    run "${SSH_CMD[@]}"
    if [[ $SIMULATE -gt 0 ]]; then
      SIMULATE=$((SIMULATE - 1))
      DRY_RUN_STATE=PREEMPTED # until recover() recreates the VM
      echo "# simulated preemption: ssh exited 255"
      return 255
    fi
    return 0
  fi
  mkdir -p "$LOG_DIR"
  printf '+ %s\n' "$(quote_cmd "${SSH_CMD[@]}")" >&2
  local rc
  set +e
  "${SSH_CMD[@]}" 2>&1 | tee -a "$LOG_DIR/all.log" | awk -v dir="$LOG_DIR" '
    { print; fflush() }
    match($0, /^\[worker [^]]+\]/) {
      w = substr($0, 9, RLENGTH - 9); f = dir "/worker_" w ".log"
      print substr($0, RLENGTH + 2) >> f; fflush(f)
    }'
  rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

wait_while_transitioning() {
  local waited=0
  tpu_state
  while [[ $TPU_STATE =~ ^(CREATING|STARTING|RESTARTING|REPAIRING|STOPPING|DELETING)$ ]]; do
    [[ $waited -lt $WAIT_TIMEOUT ]] || die "TPU VM $TPU_NAME still $TPU_STATE after ${WAIT_TIMEOUT}s"
    log "TPU VM $TPU_NAME is $TPU_STATE; waiting ${POLL_SECONDS}s"
    sleep "$POLL_SECONDS"
    waited=$((waited + POLL_SECONDS))
    tpu_state
  done
}

# Runs a sibling launch script; with --dry_run it is printed and then run in its own
# dry-run mode, so its gcloud commands are shown too.
run_script() {
  run "$@"
  if [[ $DRY_RUN == 1 ]]; then
    "$@"
  fi
}

# Brings the VM back to READY (recreating it when it was preempted) and sets it up.
recover() {
  wait_while_transitioning
  case "$TPU_STATE" in
    READY) ;;
    STOPPED) run "$GCLOUD" compute tpus tpu-vm start "$TPU_NAME" "${SCOPE_ARGS[@]}" ;;
    NOT_FOUND) run_script "$LAUNCH_DIR/create_tpu_vm.sh" "${IDENTITY_FLAGS[@]}" ;;
    *)
      # Spot/preemptible TPU VMs cannot be restarted after preemption: delete, create.
      run_script "$LAUNCH_DIR/delete_tpu_vm.sh" "${IDENTITY_FLAGS[@]}"
      run_script "$LAUNCH_DIR/create_tpu_vm.sh" "${IDENTITY_FLAGS[@]}"
      ;;
  esac
  DRY_RUN_STATE=READY
  run_script "$LAUNCH_DIR/setup_tpu_vm.sh" "${IDENTITY_FLAGS[@]}" "${SETUP_ARGS[@]}"
}

if [[ $ENSURE_VM == 1 ]]; then
  tpu_state
  if [[ $TPU_STATE == NOT_FOUND ]]; then
    run_script "$LAUNCH_DIR/create_tpu_vm.sh" "${IDENTITY_FLAGS[@]}"
  fi
  run_script "$LAUNCH_DIR/setup_tpu_vm.sh" "${IDENTITY_FLAGS[@]}" "${SETUP_ARGS[@]}"
fi

restarts=0
while true; do
  rc=0
  run_once || rc=$?
  if [[ $rc == 0 ]]; then
    log "done: rlaif-jax ${JAX_ARGS[0]} finished on every worker of $TPU_NAME"
    exit 0
  fi
  tpu_state
  if [[ $TPU_STATE == READY && $rc != 255 ]]; then
    log "rlaif-jax failed (exit $rc) on a READY VM: not a preemption; see $LOG_DIR/worker_*.log"
    exit "$rc"
  fi
  log "run interrupted (exit $rc, VM state $TPU_STATE): preempted or unreachable"
  if [[ $RESTART == 0 ]]; then
    log "re-run this same command (or pass --restart_on_preemption) to resume from the workdir"
    exit "$rc"
  fi
  restarts=$((restarts + 1))
  if [[ $restarts -gt $MAX_RESTARTS ]]; then
    log "giving up after $MAX_RESTARTS recoveries"
    exit "$rc"
  fi
  log "recovery $restarts/$MAX_RESTARTS: bringing $TPU_NAME back, then re-running the same command"
  recover
done

#!/usr/bin/env bash
# Runs one `rlaif-jax` command on GPU machines.
#
# One machine (any number of GPUs: JAX uses them all from one process):
#   launch/run_gpu_hosts.sh -- pipeline --gin_file=gin/experiments/demo.gin --workdir=/data/demo
# Several machines (one process each, jax.distributed over the first host):
#   launch/run_gpu_hosts.sh --hosts gpu0,gpu1 --port 8476 -- rl --gin_file=... --workdir=/nfs/run
#
# With several hosts, process i runs on host i with
#   --coordinator_address HOST0:PORT --num_processes N --process_id i
# appended; remote hosts are reached with ssh (keys set up, the repo and venv at --repo_dir
# and --venv on each), `localhost` runs a local process (how the tests exercise it). The
# workdir must be shared storage (NFS, gs://) for a multi-host run. Logs: LOG_DIR/host_i.log.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<EOF2
usage: $0 [flags] -- STAGE [rlaif-jax flags ...]
  --hosts H1,H2,...   one process per host; none: one local process [none]
  --port P            coordinator port on the first host [8476]
  --repo_dir DIR      repo on remote hosts, relative to home [rlaif_jax]
  --venv DIR          virtualenv on remote hosts, relative to home [rlaif_venv]
  --command CMD       the program to run, word-split [rlaif-jax]
  --ssh CMD           ssh program [ssh]
  --log_dir DIR       local log directory [logs/gpu]
  --dry_run           print every command instead of running it
EOF2
}

HOSTS=""
PORT=8476
COMMAND=rlaif-jax
SSH=ssh
LOG_DIR=logs/gpu
JAX_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --) shift; JAX_ARGS=("$@"); break ;;
    --dry_run) DRY_RUN=1; shift; continue ;;
  esac
  flag=$1
  if [[ $flag == --*=* ]]; then
    value=${flag#*=}; flag=${flag%%=*}; n=1
  else
    [[ $# -ge 2 ]] || die "flag $flag needs a value (see --help)"
    value=$2; n=2
  fi
  case "$flag" in
    --hosts) HOSTS=$value ;;
    --port) PORT=$value ;;
    --repo_dir) REMOTE_REPO_DIR=$value ;;
    --venv) REMOTE_VENV=$value ;;
    --command) COMMAND=$value ;;
    --ssh) SSH=$value ;;
    --log_dir) LOG_DIR=$value ;;
    *) die "unknown flag $flag (see --help; rlaif-jax flags go after --)" ;;
  esac
  shift "$n"
done
[[ ${#JAX_ARGS[@]} -gt 0 ]] || die "no rlaif-jax command: put STAGE and its flags after --"
[[ $PORT =~ ^[0-9]+$ ]] || die "--port expects a number, got '$PORT'"
# Word-split with shell quoting, so --command "python -c 'print(1)'" works.
eval "CMD_WORDS=($COMMAND)"

if [[ -z $HOSTS ]]; then
  run "${CMD_WORDS[@]}" "${JAX_ARGS[@]}"
  exit $?
fi

IFS=, read -ra HOST_LIST <<<"$HOSTS"
N=${#HOST_LIST[@]}
COORD="${HOST_LIST[0]}:$PORT"
[[ $DRY_RUN == 1 ]] || mkdir -p "$LOG_DIR"
pids=()
for i in "${!HOST_LIST[@]}"; do
  host=${HOST_LIST[$i]}
  argv=("${CMD_WORDS[@]}" "${JAX_ARGS[@]}" --coordinator_address "$COORD"
    --num_processes "$N" --process_id "$i")
  if [[ $host == localhost ]]; then
    cmd=("${argv[@]}")
  else
    R=$(printf '%q' "$REMOTE_REPO_DIR")
    V=$(printf '%q' "$REMOTE_VENV")
    cmd=("$SSH" "$host" "source $V/bin/activate && cd $R && $(quote_cmd "${argv[@]}")")
  fi
  if [[ $DRY_RUN == 1 ]]; then
    run "${cmd[@]}"
    continue
  fi
  log "process $i on $host: $LOG_DIR/host_$i.log"
  printf '+ %s\n' "$(quote_cmd "${cmd[@]}")" >"$LOG_DIR/host_$i.log"
  "${cmd[@]}" >>"$LOG_DIR/host_$i.log" 2>&1 &
  pids+=($!)
done
[[ $DRY_RUN == 0 ]] || exit 0

# Stream process 0's log while the processes run; report every failure.
tail -n +1 -f "$LOG_DIR/host_0.log" &
tail_pid=$!
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    log "process $i on ${HOST_LIST[$i]} failed; see $LOG_DIR/host_$i.log"
    failed=1
  fi
done
kill "$tail_pid" 2>/dev/null || true
exit "$failed"

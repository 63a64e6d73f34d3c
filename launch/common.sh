# shellcheck shell=bash
# shellcheck disable=SC2034  # variables here are read by the scripts that source this file
# Shared by the launch/*.sh scripts (sourced, never run): flag parsing for the TPU VM
# identity, --dry_run command printing, and the gcloud calls every script needs.
#
# Every command a script would run goes through `run` (or `run_sh` for a shell pipeline):
# with --dry_run it is printed on stdout as `+ ARGV` (each word quoted with printf %q, so
# the line can be pasted into bash or parsed with Python's shlex.split) and not run.

LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LAUNCH_DIR/.." && pwd)"
GCLOUD="${GCLOUD:-gcloud}"

DRY_RUN=0
TPU_NAME="${TPU_NAME:-}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
CAPACITY="${CAPACITY:-}"                 # '', spot or preemptible
REMOTE_REPO_DIR="${REMOTE_REPO_DIR:-rlaif_jax}"  # relative to the remote home directory
REMOTE_VENV="${REMOTE_VENV:-rlaif_venv}"         # relative to the remote home directory
CONSUMED=0

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

log() {
  echo "[$(basename "$0")] $*" >&2
}

# Prints argv as one shell-quoted line.
quote_cmd() {
  local s
  s=$(printf '%q ' "$@")
  printf '%s\n' "${s% }"
}

# Runs argv, or prints it with --dry_run.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '+ %s\n' "$(quote_cmd "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  "$@"
}

# Runs a shell pipeline given as one string, or prints it with --dry_run.
run_sh() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '+ %s\n' "$1"
    return 0
  fi
  printf '+ %s\n' "$1" >&2
  bash -c "set -euo pipefail; $1"
}

# Parses one flag shared by every TPU script at the start of "$@". Sets CONSUMED to the
# number of words used (0 when "$1" is not a shared flag). Accepts --flag=V and --flag V.
parse_tpu_flag() {
  CONSUMED=0
  local flag=$1 value="" n=2
  case "$flag" in
    --dry_run) DRY_RUN=1; CONSUMED=1; return 0 ;;
    --spot) CAPACITY=spot; CONSUMED=1; return 0 ;;
    --preemptible) CAPACITY=preemptible; CONSUMED=1; return 0 ;;
    --*=*) value=${flag#*=}; flag=${flag%%=*}; n=1 ;;
  esac
  case "$flag" in
    --name | --zone | --project | --accelerator_type | --version | --repo_dir | --venv) ;;
    *) return 0 ;;
  esac
  if [[ $n == 2 ]]; then
    [[ $# -ge 2 ]] || die "flag $flag needs a value"
    value=$2
  fi
  case "$flag" in
    --name) TPU_NAME=$value ;;
    --zone) ZONE=$value ;;
    --project) PROJECT=$value ;;
    --accelerator_type) ACCELERATOR_TYPE=$value ;;
    --version) RUNTIME_VERSION=$value ;;
    --repo_dir) REMOTE_REPO_DIR=$value ;;
    --venv) REMOTE_VENV=$value ;;
  esac
  CONSUMED=$n
}

# Help text for the shared flags.
tpu_flags_help() {
  cat <<'EOF'
TPU VM flags (environment defaults in brackets):
  --name NAME                 TPU VM name [$TPU_NAME]
  --zone ZONE                 e.g. us-central2-b [$ZONE]
  --project PROJECT           GCP project (default: gcloud's configured one) [$PROJECT]
  --accelerator_type TYPE     e.g. v4-8, v5litepod-16, v6e-8 [$ACCELERATOR_TYPE, v4-8]
  --version RUNTIME           TPU software version [$RUNTIME_VERSION, tpu-ubuntu2204-base]
  --spot | --preemptible      cheaper capacity that can be preempted
  --repo_dir DIR              repo on the VM, relative to home [$REMOTE_REPO_DIR, rlaif_jax]
  --venv DIR                  virtualenv on the VM, relative to home [$REMOTE_VENV, rlaif_venv]
  --dry_run                   print every command instead of running it
EOF
}

require_tpu_identity() {
  [[ -n $TPU_NAME ]] || die "no TPU VM name: pass --name NAME or set TPU_NAME"
  [[ -n $ZONE ]] || die "no zone: pass --zone ZONE or set ZONE"
}

# The --zone/--project words every gcloud tpu-vm command takes.
scope_args() {
  SCOPE_ARGS=(--zone="$ZONE")
  if [[ -n $PROJECT ]]; then
    SCOPE_ARGS+=(--project="$PROJECT")
  fi
}

# The flags that identify the VM and its software, to pass on to a sibling script.
identity_flags() {
  IDENTITY_FLAGS=(--name "$TPU_NAME" --zone "$ZONE" --accelerator_type "$ACCELERATOR_TYPE"
    --version "$RUNTIME_VERSION" --repo_dir "$REMOTE_REPO_DIR" --venv "$REMOTE_VENV")
  if [[ -n $PROJECT ]]; then
    IDENTITY_FLAGS+=(--project "$PROJECT")
  fi
  if [[ -n $CAPACITY ]]; then
    IDENTITY_FLAGS+=("--$CAPACITY")
  fi
  if [[ $DRY_RUN == 1 ]]; then
    IDENTITY_FLAGS+=(--dry_run)
  fi
}

# Sets TPU_STATE to the VM state (READY, CREATING, PREEMPTED, TERMINATED, ...) or
# NOT_FOUND. With --dry_run it prints the describe command and reports $DRY_RUN_STATE
# (default READY), which run_tpu_vm.sh --simulate_preemption sets.
tpu_state() {
  scope_args
  local cmd=("$GCLOUD" compute tpus tpu-vm describe "$TPU_NAME" "${SCOPE_ARGS[@]}"
    --format="value(state)")
  if [[ $DRY_RUN == 1 ]]; then
    printf '+ %s\n' "$(quote_cmd "${cmd[@]}")"
    TPU_STATE=${DRY_RUN_STATE:-READY}
    return 0
  fi
  if TPU_STATE=$("${cmd[@]}" 2>/dev/null) && [[ -n $TPU_STATE ]]; then
    return 0
  fi
  TPU_STATE=NOT_FOUND
}

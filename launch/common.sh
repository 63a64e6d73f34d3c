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
RUNTIME_VERSION="${RUNTIME_VERSION:-}"   # '': the default for ACCELERATOR_TYPE (see below)
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
  --version RUNTIME           TPU software version [$RUNTIME_VERSION, else by type: v6e-*
                              v2-alpha-tpuv6e, v5litepod-*/v5e-* v2-alpha-tpuv5-lite,
                              v5p-* v2-alpha-tpuv5, v2/v3/v4 tpu-ubuntu2204-base]
  --spot | --preemptible      cheaper capacity that can be preempted
  --repo_dir DIR              repo on the VM, relative to home [$REMOTE_REPO_DIR, rlaif_jax]
  --venv DIR                  virtualenv on the VM, relative to home [$REMOTE_VENV, rlaif_venv]
  --dry_run                   print every command instead of running it
EOF
}

# The TPU software version each generation needs (cloud.google.com/tpu/docs/runtimes):
# v5e/v5p/v6e images differ from the v4-and-older one.
default_runtime_version() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

# Checks the flags every TPU script needs (run after parsing) and fills in the defaults
# that depend on other flags.
require_tpu_identity() {
  [[ -n $TPU_NAME ]] || die "no TPU VM name: pass --name NAME or set TPU_NAME"
  [[ -n $ZONE ]] || die "no zone: pass --zone ZONE or set ZONE"
  if [[ -z $RUNTIME_VERSION ]]; then
    RUNTIME_VERSION=$(default_runtime_version "$ACCELERATOR_TYPE")
  fi
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

# --- Queued resources (gcloud compute tpus queued-resources): how v5e/v6e capacity, spot
# and reservations are requested. A queued resource QR_NAME asks for one TPU VM, its node
# (--node-id), which is the TPU VM named TPU_NAME once the request is ACTIVE; the tpu-vm
# scripts (setup, run) then work on it unchanged.

QR_NAME="${QR_NAME:-}"   # '': "$TPU_NAME-qr"
RESERVED=0
VALID_UNTIL=""
QR_POLL_SECONDS=60
QR_WAIT_TIMEOUT=86400

# Parses one queued-resource flag at the start of "$@" (sets CONSUMED like parse_tpu_flag).
parse_qr_flag() {
  CONSUMED=0
  local flag=$1 value="" n=2
  case "$flag" in
    --reserved) RESERVED=1; CONSUMED=1; return 0 ;;
    --*=*) value=${flag#*=}; flag=${flag%%=*}; n=1 ;;
  esac
  case "$flag" in
    --qr_name | --valid_until_duration | --poll_seconds | --wait_timeout) ;;
    *) return 0 ;;
  esac
  if [[ $n == 2 ]]; then
    [[ $# -ge 2 ]] || die "flag $flag needs a value"
    value=$2
  fi
  case "$flag" in
    --qr_name) QR_NAME=$value ;;
    --valid_until_duration) VALID_UNTIL=$value ;;
    --poll_seconds) QR_POLL_SECONDS=$value ;;
    --wait_timeout) QR_WAIT_TIMEOUT=$value ;;
  esac
  CONSUMED=$n
}

qr_flags_help() {
  cat <<'EOF2'
Queued-resource flags:
  --qr_name ID                queued resource ID [$QR_NAME, NAME-qr]; its node is --name
  --spot | --reserved         spot capacity, or your reservation (default: on-demand)
  --valid_until_duration D    give up on the request if not filled within D (e.g. 6h, 2d)
  --poll_seconds S            state polling interval while waiting [60]
  --wait_timeout S            longest wait for ACTIVE, in seconds [86400]
EOF2
}

# Checks the queued-resource flags (after require_tpu_identity).
require_qr_identity() {
  QR_NAME=${QR_NAME:-$TPU_NAME-qr}
  [[ $CAPACITY != preemptible ]] ||
    die "queued resources take --spot or --reserved, not --preemptible"
  [[ ! ($CAPACITY == spot && $RESERVED == 1) ]] || die "--spot and --reserved exclude each other"
  for v in "$QR_POLL_SECONDS" "$QR_WAIT_TIMEOUT"; do
    [[ $v =~ ^[0-9]+$ ]] || die "expected a non-negative number of seconds, got '$v'"
  done
}

# The queued-resource flags, to pass on to a sibling script.
qr_flags() {
  QR_FLAGS=(--qr_name "$QR_NAME" --poll_seconds "$QR_POLL_SECONDS"
    --wait_timeout "$QR_WAIT_TIMEOUT")
  if [[ $RESERVED == 1 ]]; then
    QR_FLAGS+=(--reserved)
  fi
  if [[ -n $VALID_UNTIL ]]; then
    QR_FLAGS+=(--valid_until_duration "$VALID_UNTIL")
  fi
}

# Sets QR_STATE to the queued resource's state (WAITING_FOR_RESOURCES, PROVISIONING,
# ACTIVE, FAILED, SUSPENDED, ...) or NOT_FOUND. With --dry_run it prints the describe
# command and reports $DRY_RUN_QR_STATE (default ACTIVE).
qr_state() {
  scope_args
  local cmd=("$GCLOUD" compute tpus queued-resources describe "$QR_NAME" "${SCOPE_ARGS[@]}"
    --format="value(state.state)")
  if [[ $DRY_RUN == 1 ]]; then
    printf '+ %s\n' "$(quote_cmd "${cmd[@]}")"
    QR_STATE=${DRY_RUN_QR_STATE:-ACTIVE}
    return 0
  fi
  if QR_STATE=$("${cmd[@]}" 2>/dev/null) && [[ -n $QR_STATE ]]; then
    return 0
  fi
  QR_STATE=NOT_FOUND
}

# Polls the queued resource until it is ACTIVE. Exits 3, saying why, when it ends up
# FAILED, SUSPENDING, SUSPENDED, DELETING or gone (none of these becomes ACTIVE again), or
# is still waiting after QR_WAIT_TIMEOUT seconds.
wait_qr_active() {
  local start=$SECONDS last=""
  while true; do
    qr_state
    case "$QR_STATE" in
      ACTIVE)
        log "queued resource $QR_NAME is ACTIVE: TPU VM $TPU_NAME is ready"
        return 0
        ;;
      CREATING | ACCEPTED | WAITING_FOR_RESOURCES | PROVISIONING) ;;
      *)
        log "queued resource $QR_NAME is $QR_STATE; it will not become ACTIVE."
        if [[ $QR_STATE != NOT_FOUND ]]; then
          # The state details say why (capacity, quota, an expired --valid_until_duration).
          "$GCLOUD" compute tpus queued-resources describe "$QR_NAME" "${SCOPE_ARGS[@]}" \
            --format="yaml(state)" >&2 || true
        fi
        log "delete it (launch/delete_queued_resource.sh) and create it again, or try" \
          "another zone or capacity."
        exit 3
        ;;
    esac
    if [[ $QR_STATE != "$last" ]]; then
      log "queued resource $QR_NAME is $QR_STATE; polling every ${QR_POLL_SECONDS}s" \
        "(up to ${QR_WAIT_TIMEOUT}s)"
      last=$QR_STATE
    fi
    if ((SECONDS - start >= QR_WAIT_TIMEOUT)); then
      log "queued resource $QR_NAME still $QR_STATE after ${QR_WAIT_TIMEOUT}s (--wait_timeout)." \
        "It stays queued: wait again with the same command, or delete it."
      exit 3
    fi
    sleep "$QR_POLL_SECONDS"
  done
}

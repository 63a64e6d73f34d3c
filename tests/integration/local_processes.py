"""Runs a worker script as N local processes that join one jax.distributed job."""

import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_local_processes(worker: str, nproc: int, extra_args, timeout: float = 240) -> list[str]:
    """Starts `worker PROCESS_ID NPROC PORT *extra_args` for each process, waits, fails the
    test with the logs when one times out or exits non-zero; returns the logs."""
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("XLA_FLAGS", None)  # each worker sets its own device count
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(i), str(nproc), port, *map(str, extra_args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(nproc)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{os.path.basename(worker)} timed out:\n" + "\n".join(logs))
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return logs


def join_local_job(process_id: int, num_processes: int, port: str) -> None:
    """In a worker started by `run_local_processes`: joins the jax.distributed job on
    localhost:port with gloo CPU collectives (nothing to do for one process)."""
    if num_processes == 1:
        return
    import jax

    from rlaif_jax import runtime

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    runtime.initialize(
        runtime.DistributedConfig(
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=process_id,
        )
    )

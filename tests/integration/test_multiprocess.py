"""Two local processes with jax.distributed (gloo) give the same step as one process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(REPO, "tests", "integration", "multiprocess_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(nproc: int, out: str) -> dict:
    port = str(_free_port())
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(i), str(nproc), port, out],
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
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-process run timed out:\n" + "\n".join(logs))
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    with open(out) as f:
        return json.load(f)


@pytest.mark.multiprocess
def test_two_processes_match_one(tmp_path):
    one = _run(1, str(tmp_path / "one.json"))
    two = _run(2, str(tmp_path / "two.json"))
    assert one["process_count"] == 1 and two["process_count"] == 2
    assert one["device_count"] == two["device_count"] == 8
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6)
    np.testing.assert_allclose(np.array(two["w"]), np.array(one["w"]), rtol=1e-6, atol=1e-7)

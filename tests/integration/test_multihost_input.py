"""Two local processes, each reading only its data shards, build the same global batches
(and resume to the same position) as one process."""

import json
import os

import pytest

from tests.integration.local_processes import REPO, run_local_processes

WORKER = os.path.join(REPO, "tests", "integration", "multihost_input_worker.py")


def _tldr_file(path, n=52):
    with open(path, "w") as f:
        for i in range(n):
            row = {
                "id": f"t3_{i:04x}",
                "subreddit": ["relationships", "tifu", "running"][i % 3],
                "title": f"Question number {i} about something" + " long" * (i % 7),
                "post": f"Post {i}: " + "some words here " * (1 + i % 5),
                "summary": f"summary of post {i}" + " more" * (i % 4),
            }
            f.write(json.dumps(row) + "\n")


def _run(nproc: int, data: str, out: str) -> dict:
    run_local_processes(WORKER, nproc, [data, out], timeout=120)
    with open(out) as f:
        return json.load(f)


@pytest.mark.multiprocess
def test_two_processes_build_the_one_process_global_batches(tmp_path):
    data = str(tmp_path / "tldr.jsonl")
    _tldr_file(data)
    one = _run(1, data, str(tmp_path / "one.json"))
    two = _run(2, data, str(tmp_path / "two.json"))
    assert (one["process_count"], two["process_count"]) == (1, 2)
    # Each process read only its half of the records.
    assert one["records_read_by_process_0"] == one["records_read_total"] == 52
    assert two["records_read_by_process_0"] == 26 and two["records_read_total"] == 52
    assert len(two["batches"]) == len(one["batches"]) == 7
    for b1, b2 in zip(one["batches"], two["batches"]):
        assert b1 == b2
    assert one["batches"][0] != one["batches"][1]
    assert one["state"] == two["state"] == {"epoch": 1, "step": 1}  # 6 steps per epoch

"""Two local processes with jax.distributed (gloo) give the same step as one process."""

import json
import os

import numpy as np
import pytest

from tests.integration.local_processes import REPO, run_local_processes

WORKER = os.path.join(REPO, "tests", "integration", "multiprocess_worker.py")


def _run(nproc: int, out: str) -> dict:
    run_local_processes(WORKER, nproc, [out])
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


DECODE_SCORE_WORKER = os.path.join(REPO, "tests", "integration", "decode_score_worker.py")


@pytest.mark.multiprocess
def test_decoding_and_rm_accuracy_over_two_processes_match_one(tmp_path):
    """Every process holds the same prompts and pairs (the evaluation, sample_pairs, RL
    selection and reward stages): over two processes each feeds its share of every batch
    and all of them read every row back, so the texts and agreements are one process's."""
    outs = []
    for nproc in (1, 2):
        run_local_processes(DECODE_SCORE_WORKER, nproc, [tmp_path / f"{nproc}.json"])
        with open(tmp_path / f"{nproc}.json") as f:
            outs.append(json.load(f))
    one, two = outs
    assert (one["process_count"], two["process_count"]) == (1, 2)
    assert one["device_count"] == two["device_count"] == 8
    assert len(one["texts"]) == 20 and len(one["agreements"]) == 13
    assert two["texts"] == one["texts"]
    np.testing.assert_array_equal(two["agreements"], one["agreements"])

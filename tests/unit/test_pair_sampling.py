"""pair_sampling.py: pairs of the first two distinct non-empty policy candidates."""

import pytest

from rlaif_jax.pair_sampling import distinct_pairs


def test_distinct_pairs_take_the_first_two_distinct_nonempty_candidates():
    prompts = [{"id": f"p{i}", "context": f"c{i}"} for i in range(3)]
    candidates = ["a", "a", "b", "c"] + ["x", "", "x", "x"] + ["", "y", " ", "z"]
    pairs, dropped = distinct_pairs(prompts, candidates, num_candidates=4)
    assert dropped == 1  # p1: one distinct non-empty candidate
    assert pairs == [
        {"id": "p0", "context": "c0", "response1": "a", "response2": "b"},
        {"id": "p2", "context": "c2", "response1": "y", "response2": "z"},
    ]
    with pytest.raises(ValueError, match="candidates"):
        distinct_pairs(prompts, candidates[:-1], num_candidates=4)

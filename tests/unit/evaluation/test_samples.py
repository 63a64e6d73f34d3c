"""Evaluation samples on disk: k samples per prompt, reused only for the same decoding."""

import json

from rlaif_jax.evaluation import samples

PROMPTS = [{"id": "p0", "context": "c0"}, {"id": "p1", "context": "c1"}]


def test_samples_round_trip_prompt_major(tmp_path):
    path = str(tmp_path / "samples_x.jsonl")
    responses = ["p0 s0", "p0 s1", "p1 s0", "p1 s1"]
    samples.write_samples(path, PROMPTS, responses, temperature=0.9)
    rows = [json.loads(line) for line in open(path)]
    assert [(r["id"], r["sample"], r["response"]) for r in rows] == [
        ("p0", 0, "p0 s0"),
        ("p0", 1, "p0 s1"),
        ("p1", 0, "p1 s0"),
        ("p1", 1, "p1 s1"),
    ]
    assert samples.load_samples(path, ["p0", "p1"], 2, 0.9) == responses


def test_stale_samples_are_not_reused(tmp_path):
    path = str(tmp_path / "samples_x.jsonl")
    samples.write_samples(path, PROMPTS, ["a", "b", "c", "d"], temperature=0.9)
    assert samples.load_samples(path, ["p0", "p1"], 2, 0.0) is None  # other temperature
    assert samples.load_samples(path, ["p0", "p1"], 1, 0.9) is None  # other sample count
    assert samples.load_samples(path, ["p0"], 2, 0.9) is None  # other prompts
    assert samples.load_samples(str(tmp_path / "missing.jsonl"), ["p0"], 1, 0.0) is None


def test_side_by_side_shows_the_first_sample(tmp_path):
    samples.write_side_by_side(str(tmp_path), PROMPTS, {"a": ["a0", "a1", "b0", "b1"]})
    rows = [json.loads(line) for line in open(tmp_path / "side_by_side.jsonl")]
    assert [r["a"] for r in rows] == ["a0", "b0"]

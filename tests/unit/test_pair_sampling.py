"""On-policy pair data: distinct-candidate pairing, the pair file reader, the toy human's
ratings and the label / reward stages' view of the sources (`PolicyPairs`, as gin
binds it through `rlaif_jax.configurables`)."""

import json

import pytest

from rlaif_jax import configurables, gin_utils
from rlaif_jax.data import formats, splits, tasks
from rlaif_jax.labeling.labeler import human_label
from rlaif_jax.pair_sampling import distinct_pairs
from rlaif_jax.toy import oracle as toy_oracle
from rlaif_jax.toy import text as toy_text
from rlaif_jax.toy.world import ToyWorld, ToyWorldConfig


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


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_read_policy_pairs_rated_unrated_and_bad_fields(tmp_path):
    base = {"id": "a", "context": "ctx", "response1": "r1", "response2": "r2"}
    rated = _write(tmp_path / "rated.jsonl", [{**base, "label": 1, "confidence": 2}])
    assert list(formats.read_policy_pairs(rated)) == [{**base, "label": 1.0, "confidence": 2}]
    unrated = _write(tmp_path / "unrated.jsonl", [base])
    (rec,) = formats.read_policy_pairs(unrated)
    assert rec == {**base, "label": -1.0, "confidence": 0}
    assert human_label(rec) == -1.0  # no human label: left out of alignment metrics
    bad = _write(tmp_path / "bad.jsonl", [base, {**base, "label": 2.0, "confidence": 1}])
    with pytest.raises(formats.RecordError, match=r"bad.jsonl, line 2, field 'label'"):
        list(formats.read_policy_pairs(bad))
    no_text = _write(tmp_path / "no_text.jsonl", [{**base, "context": " "}])
    with pytest.raises(formats.RecordError, match="field 'context': empty text"):
        list(formats.read_policy_pairs(no_text))


def test_toy_human_labels_follow_the_oracle_and_are_deterministic():
    world = ToyWorld(ToyWorldConfig(num_pairs=8))
    post = world.post("eval", 3)
    perfect = toy_text.render_summary(post.key_facts)
    looped = toy_text.render_summary(post.key_facts[:1] * 4)
    assert (
        toy_oracle.oracle_score(post.context, perfect)
        - toy_oracle.oracle_score(post.context, looped)
        > 1.5
    )  # a margin the human (tau 0.32) gets right with P > 0.99
    pairs = [
        {"id": f"q{i}", "context": post.context, "response1": perfect, "response2": looped}
        for i in range(20)
    ]
    labels = world.human_labels(pairs)
    assert labels == ToyWorld(ToyWorldConfig(num_pairs=8)).human_labels(pairs)
    assert all((label == 1.0) == (conf <= 4) for label, conf in labels)  # one scale
    assert sum(label for label, _ in labels) >= 18  # P(flip) < 0.01 per pair


def _stage_view(workdir) -> tasks.TaskSources:
    """What the label and reward stages read: the task's data with the gin PolicyPairs."""
    return configurables.build_policy_pairs().apply(configurables.build_data(), str(workdir))


def _toy_sources_with_pairs(tmp_path, rows, **bindings):
    gin_utils.parse_gin(
        ["tasks/toy.gin"],
        ["ToyWorldConfig.num_pairs = 40", "ToyWorldConfig.num_heldout_pairs = 10"]
        + [f"PolicyPairs.{k} = {v!r}" for k, v in bindings.items()],
    )
    (tmp_path / "policy_pairs").mkdir(exist_ok=True)
    _write(tmp_path / "policy_pairs" / "train.jsonl", rows)
    return _stage_view(tmp_path)


def _policy_rows(n, rated):
    world = ToyWorld()
    rows = []
    for i in range(n):
        post = world.post("pairs-train", i)
        row = {
            "id": f"toy-pairs-train-{i}",
            "context": post.context,
            "response1": toy_text.render_summary(post.key_facts),
            "response2": toy_text.render_summary(post.facts),
        }
        if rated:
            row.update(label=1.0 if i % 3 else 0.0, confidence=(1, 2, 5, 8, 9)[i % 5])
        rows.append(row)
    return rows


def test_stage_view_without_policy_pairs_is_the_task_sources(tmp_path):
    gin_utils.parse_gin(["tasks/toy.gin"], ["ToyWorldConfig.num_pairs = 40"])
    data = _stage_view(tmp_path)
    assert list(data.source("unlabeled", "train")) == list(
        configurables.build_data().source("unlabeled", "train")
    )


def test_rated_policy_pairs_replace_unlabeled_human_prefs_and_alignment(tmp_path):
    rows = _policy_rows(30, rated=True)
    data = _toy_sources_with_pairs(
        tmp_path, rows, pairs_dir="policy_pairs", alignment_fraction=0.5, max_alignment=5
    )
    want = list(formats.read_policy_pairs(str(tmp_path / "policy_pairs" / "train.jsonl")))
    assert list(data.source("unlabeled", "train")) == want
    assert list(data.source("human_prefs", "train")) == want
    alignment = list(data.source("alignment", "train"))
    assert alignment == list(splits.alignment_subset(want, "summarize", 0, 0.5))[:5]
    assert alignment and all(r["confidence"] in splits.HIGH_CONFIDENCE for r in alignment)
    # Held-out human preferences stay the task's own validation pairs.
    assert list(data.source("human_prefs", "validation")) == list(
        configurables.build_data().source("human_prefs", "validation")
    )


def test_unrated_policy_pairs_replace_only_the_unlabeled_pairs(tmp_path):
    data = _toy_sources_with_pairs(tmp_path, _policy_rows(6, rated=False), pairs_dir="policy_pairs")
    assert [r["confidence"] for r in data.source("unlabeled", "train")] == [0] * 6
    original = configurables.build_data()
    assert list(data.source("human_prefs", "train")) == list(
        original.source("human_prefs", "train")
    )
    assert list(data.source("alignment", "train")) == list(original.source("alignment", "train"))


def test_missing_policy_pairs_name_the_stage_to_run(tmp_path):
    gin_utils.parse_gin(["tasks/toy.gin"], ["PolicyPairs.pairs_dir = 'policy_pairs'"])
    with pytest.raises(FileNotFoundError, match="policy_pairs/train.jsonl"):
        _stage_view(tmp_path)

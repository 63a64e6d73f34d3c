"""The `label` stage: shards + manifest + metrics + COMPLETE; kill-and-resume gives the
same labeled set as an uninterrupted run."""

from __future__ import annotations

import json
import os

import pytest

from rlaif_jax import artifacts
from rlaif_jax.data import formats
from rlaif_jax.labeling import render, stage
from rlaif_jax.labeling.labeler import LabelerSettings
from tests.unit.labeling._helpers import CharVocab, RiggedScorer, pairs


class Killed(RuntimeError):
    pass


def _run(workdir, on_shard=None, data=None, align=None):
    vocab = CharVocab()
    return stage.run_stage(
        workdir=str(workdir),
        variant=render.PromptVariant("summarize", "base"),
        labeler_fn=lambda wd, mesh, rules: (RiggedScorer(vocab, position_bias=1.0), vocab),
        pairs=data if data is not None else pairs(23),
        alignment_pairs=align,
        settings=LabelerSettings(pairs_per_call=4),
        shard_size=5,
        on_shard=on_shard,
    )


def _records(workdir):
    return list(formats.read_ai_preferences(os.path.join(workdir, "labels")))


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    full = tmp_path / "full"
    _run(full)
    want = _records(full)
    assert len(want) == 23 and len({r["id"] for r in want}) == 23

    resumed = tmp_path / "resumed"

    def die_after_two(k):
        if k == 1:
            raise Killed

    with pytest.raises(Killed):
        _run(resumed, on_shard=die_after_two)
    label_dir = resumed / "labels"
    manifest = json.loads((label_dir / "manifest.json").read_text())
    assert [s["file"] for s in manifest["shards"]] == [
        stage.shard_name(0, 5),
        stage.shard_name(1, 5),
    ]
    assert not manifest["complete"] and not artifacts.is_complete(str(label_dir))
    # A half-written shard from the killed process must not count as finished.
    (label_dir / (stage.shard_name(2, 5) + ".tmp123")).write_text('{"id": "p10"}\n')

    labeled_again = []
    _run(resumed, on_shard=labeled_again.append)
    assert labeled_again == [2, 3, 4]  # finished shards were not relabeled
    got = _records(resumed)
    assert [(r["id"], r["label"], r["p_order1"], r["p_order2"]) for r in got] == [
        (r["id"], r["label"], r["p_order1"], r["p_order2"]) for r in want
    ]
    manifest = json.loads((label_dir / "manifest.json").read_text())
    assert manifest["complete"] and sum(s["num_records"] for s in manifest["shards"]) == 23


def test_metrics_and_marker(tmp_path):
    data = pairs(30, seed=5)
    align = pairs(20, seed=6)
    for i, p in enumerate(align):
        p["id"] = f"a{i}"
    m = _run(tmp_path, data=data, align=align)
    label_dir = tmp_path / "labels"
    assert artifacts.is_complete(str(label_dir))
    on_disk = json.loads((label_dir / "metrics.json").read_text())
    for key in (
        "labeler_alignment",
        "labeler_alignment_single_order",
        "position_bias_same_position_rate",
    ):
        assert 0.0 <= on_disk[key] <= 1.0 and on_disk[key] == pytest.approx(m[key])
    # Alignment is measured on the alignment subset (20 pairs with human labels).
    assert m["num_alignment_pairs"] == 20 and m["num_labeled_pairs"] == 30
    assert len(list(formats.read_ai_preferences(str(label_dir / "alignment")))) == 20
    # The rigged labeler's position bias hurts single-order alignment (ties excluded:
    # human label 0.5 counts against both).
    assert m["labeler_alignment"] >= m["labeler_alignment_single_order"]


def test_duplicate_ids_rejected(tmp_path):
    data = pairs(4)
    data[3]["id"] = data[0]["id"]
    with pytest.raises(ValueError, match="unique"):
        _run(tmp_path, data=data)

"""labeling/stage.py: position-bias metrics read the position the labeler picked, also
on an inverted (harmless) prompt."""

from __future__ import annotations

import pytest

from rlaif_jax.labeling import render, stage
from rlaif_jax.labeling.labeler import LabelerSettings
from tests.unit.labeling._helpers import AlwaysFirst, CharVocab


def dialogue_pairs(n):
    return [
        {
            "id": f"d{i}",
            "context": f"Human: question {i}?",
            "response1": f"answer a{i}",
            "response2": f"answer b{i}",
            "label": float(i % 2),
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("task", ["helpful", "harmless"])
def test_always_answering_one_favours_the_first_position_on_every_task(task, tmp_path):
    vocab = CharVocab()
    metrics = stage.run_stage(
        workdir=str(tmp_path),
        variant=render.PromptVariant(task),
        labeler_fn=lambda wd, mesh, rules: (AlwaysFirst(vocab), vocab),
        pairs=dialogue_pairs(6),
        settings=LabelerSettings(pairs_per_call=4, max_len=256),
        shard_size=4,
    )
    assert metrics["position_bias_same_position_rate"] == pytest.approx(1.0)
    assert metrics["position_bias_favour_first"] == pytest.approx(1.0)
    # The records stay preferences: harmless "1 is more harmful" -> response1 dispreferred.
    rec = stage.read_records(str(tmp_path / "labels"))[0]
    assert rec["p_order1"] == pytest.approx(0.1 if task == "harmless" else 0.9)

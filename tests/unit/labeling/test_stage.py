"""labeling/stage.py: position-bias metrics read the position the labeler picked, also
on an inverted (harmless) prompt."""

from __future__ import annotations

import json

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


class _Data:
    """The slice of data.tasks.TaskSources the label stage reads: roles by split."""

    task = "helpful"

    def __init__(self, roles):
        self.roles = roles
        self.sources = {role: {"train": rows} for role, rows in roles.items()}

    def source(self, role, split):
        return list(self.roles[role])


def test_alignment_only_labels_just_the_alignment_subset_with_random_exemplars(tmp_path):
    vocab = CharVocab()
    alignment = dialogue_pairs(5)
    human = [dict(p, id=f"h{i}") for i, p in enumerate(dialogue_pairs(8))] + alignment[:2]
    data = _Data({"unlabeled": dialogue_pairs(40), "alignment": alignment, "human_prefs": human})
    scorer = AlwaysFirst(vocab)
    metrics = stage.run_stage(
        workdir=str(tmp_path),
        variant=render.PromptVariant("helpful"),
        variant_overrides={"num_shots": 1},  # a table row's prompt over the configured one
        labeler_fn=lambda wd, mesh, rules: (scorer, vocab),
        data=data,
        settings=LabelerSettings(pairs_per_call=4, max_len=512),
        shard_size=4,
        output_dir="tables/t/row",
        alignment_only=True,
        exemplar_seed=3,
    )
    out = tmp_path / "tables" / "t" / "row"
    assert metrics["num_alignment_pairs"] == 5 and metrics["num_labeled_pairs"] == 0
    assert not list(out.glob("shard-*"))  # no training labels, only the alignment subset
    assert len(stage.read_records(str(out / "alignment"))) == 5
    info = json.loads((out / "alignment" / "manifest.json").read_text())
    assert info["exemplar_seed"] == 3 and info["variant"] == "helpful: Base 1-shot"
    text = "".join(scorer.texts)
    # The exemplar is one of the human pairs outside the alignment subset.
    assert any(f"question {i}?" in text for i in range(8))
    with pytest.raises(ValueError, match="no alignment pairs"):
        stage.run_stage(
            workdir=str(tmp_path),
            labeler_fn=lambda wd, mesh, rules: (AlwaysFirst(vocab), vocab),
            data=_Data({"unlabeled": dialogue_pairs(4), "human_prefs": human}),
            alignment_only=True,
        )

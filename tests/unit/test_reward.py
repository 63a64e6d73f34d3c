"""reward.py: the reported held-out RM accuracy counts label ties one half."""

import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax import reward
from rlaif_jax.decoding import score
from tests.unit._helpers import _reference_agreement


def test_held_out_pairwise_accuracy_counts_label_ties_half(monkeypatch):
    """`reward.pairwise_accuracy_on` (the reported RM accuracy) with a stand-in scorer
    (score = first token) over padded, 8-way batches against the NumPy reference."""
    rng = np.random.default_rng(1)
    n = 21  # not a multiple of the batch size: the last batch is padded
    first1 = rng.integers(0, 5, size=n)
    first2 = rng.integers(0, 5, size=n)
    labels = rng.choice([0.0, 1.0, 0.5], size=n)
    labels[:3] = 0.5
    first1[:3], first2[:3] = 4, 0  # RM clearly prefers response1 on the tie-labelled pairs
    pairs = [
        {"a": int(a), "b": int(b), "label": float(y)} for a, b, y in zip(first1, first2, labels)
    ]

    def batch_fn(chunk):
        t1 = np.array([[p["a"], 1, 1, 1] for p in chunk], np.int32)
        t2 = np.array([[p["b"], 1, 1, 1] for p in chunk], np.int32)
        lengths = np.full(len(chunk), 4, np.int32)
        label = np.array([p["label"] for p in chunk], np.float32)
        return {
            "tokens1": t1,
            "lengths1": lengths,
            "tokens2": t2,
            "lengths2": lengths,
            "label": label,
        }

    def fake_make_scorer(config, mesh, rules, kind):
        assert kind == "sequence_scores"
        return lambda params, tokens, lengths: jnp.asarray(tokens)[:, 0].astype(jnp.float32)

    monkeypatch.setattr(score, "make_scorer", fake_make_scorer)
    got = reward.pairwise_accuracy_on(None, None, pairs, batch_fn, batch_size=8)
    ref = _reference_agreement(first1.astype(float) - first2, labels).mean()
    assert got == pytest.approx(ref)


def test_max_train_pairs_draws_a_seeded_subset_in_order():
    from rlaif_jax import reward

    records = [{"id": str(i)} for i in range(50)]
    a = reward.subsample(records, 10, 3, "reward.max_train_pairs")
    assert a == reward.subsample(records, 10, 3, "reward.max_train_pairs")
    ids = [int(r["id"]) for r in a]
    assert len(set(ids)) == 10 and ids == sorted(ids)
    assert ids != [int(r["id"]) for r in reward.subsample(records, 10, 4, "x")]
    with pytest.raises(ValueError, match=r"reward.max_train_pairs = 51: choose 1..50"):
        reward.subsample(records, 51, 0, "reward.max_train_pairs")


def _pairs(prefix, labels):
    return [
        {
            "id": f"{prefix}{i}",
            "context": f"post {i}",
            "response1": f"{prefix} a{i}",
            "response2": f"{prefix} b{i}",
            "label": float(y),
            "confidence": 5,  # a field the RM does not read
        }
        for i, y in enumerate(labels)
    ]


def test_human_plus_ai_mix_keeps_every_human_pair_and_as_many_ai_pairs():
    human = _pairs("h", [1, 0, 1, 1, 0, 1])
    ai = _pairs("a", np.linspace(0.05, 0.95, 20))
    mixed, counts = reward.mix_human_and_ai(human, ai, seed=3)
    assert counts == {"num_human_pairs": 6, "num_ai_pairs": 6}
    got_h = [r for r in mixed if r["source"] == "human"]
    got_a = [r for r in mixed if r["source"] == "ai"]
    assert [r["id"] for r in got_h] == [r["id"] for r in human]
    assert [r["label"] for r in got_h] == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]  # hard human labels
    by_id = {r["id"]: r for r in ai}
    assert len({r["id"] for r in got_a}) == 6  # drawn without replacement
    for r in got_a:  # the labeler's soft label, text untouched
        src = by_id[r["id"]]
        assert r["label"] == src["label"] and 0 < r["label"] < 1
        assert (r["context"], r["response1"], r["response2"]) == (
            src["context"], src["response1"], src["response2"]
        )  # fmt: skip
    assert all(
        set(r) == {"id", "context", "response1", "response2", "label", "source"} for r in mixed
    )
    again, _ = reward.mix_human_and_ai(human, ai, seed=3)
    other, _ = reward.mix_human_and_ai(human, ai, seed=4)
    assert again == mixed and other != mixed  # the draw is TrainSettings.seed's


def test_human_plus_ai_mix_with_fewer_ai_pairs_takes_them_all(caplog):
    human, ai = _pairs("h", [1] * 5), _pairs("a", [0.3, 0.8])
    mixed, counts = reward.mix_human_and_ai(human, ai, seed=0)
    assert counts == {"num_human_pairs": 5, "num_ai_pairs": 2}
    assert [r["id"] for r in mixed] == ["h0", "h1", "h2", "h3", "h4", "a0", "a1"]
    assert "not equal-sized" in caplog.text


class _Sources:
    """TaskSources stand-in: human_prefs/train and the AI preferences of a label dir."""

    def __init__(self, human, ai_by_dir):
        self.human, self.ai_by_dir, self.ai = human, ai_by_dir, None

    def source(self, role, split):
        assert split == "train"
        return {"human_prefs": self.human, "ai_prefs": self.ai}[role]

    def with_ai_labels(self, label_dir):
        view = _Sources(self.human, self.ai_by_dir)
        view.ai = self.ai_by_dir.get(label_dir, [])
        return view


def test_training_pairs_by_preferences():
    human, ai = _pairs("h", [1, 0]), _pairs("a", [0.2, 0.6, 0.9])
    data = _Sources(human, {"labels_combined": ai})
    assert reward._training_pairs(data, "human", "labels_combined", 0) == (
        human, {"num_human_pairs": 2}
    )  # fmt: skip
    assert reward._training_pairs(data, "ai", "labels_combined", 0) == (ai, {"num_ai_pairs": 3})
    mixed, counts = reward._training_pairs(data, "human+ai", "labels_combined", 0)
    assert counts == {"num_human_pairs": 2, "num_ai_pairs": 2} and len(mixed) == 4
    with pytest.raises(FileNotFoundError, match="labels_other"):
        reward._training_pairs(data, "human+ai", "labels_other", 0)
    with pytest.raises(ValueError, match="human\\+ai"):
        reward.run_stage(workdir="unused", preferences="ai+human")

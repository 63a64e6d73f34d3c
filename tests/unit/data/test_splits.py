"""data/splits.py: deterministic order randomisation, the alignment subset, the HH
evaluation split and pair swapping."""

import pytest

from rlaif_jax.data import formats, splits
from tests.unit.data._helpers import COMP, HELPFUL


def test_randomize_order_flips_labels_deterministically():
    pairs = list(formats.read_comparisons(COMP)) + list(formats.read_hh(HELPFUL, "helpful"))
    a = list(splits.randomize_order(pairs, seed=3))
    assert a == list(splits.randomize_order(pairs, seed=3))
    assert a[::-1] == list(splits.randomize_order(pairs[::-1], seed=3))  # order-independent
    swapped = 0
    for orig, new in zip(pairs, a):
        if new["response1"] == orig["response1"]:
            assert new == orig
        else:
            swapped += 1
            assert (new["response1"], new["response2"]) == (orig["response2"], orig["response1"])
            assert new["label"] == 1.0 - orig["label"]
        # the preferred text is the same whichever order it is shown in
        pref = new["response1"] if new["label"] == 1.0 else new["response2"]
        assert pref == (orig["response1"] if orig["label"] == 1.0 else orig["response2"])
    assert 0 < swapped < len(pairs)
    assert a != list(splits.randomize_order(pairs, seed=4))


def test_alignment_subset():
    many = [
        {"id": f"p{i}", "confidence": 1 + i % 9, "label": 1.0, "context": "", "response1": ""}
        for i in range(9000)
    ]
    summ = list(splits.alignment_subset(many, "summarize", seed=0))
    assert {r["confidence"] for r in summ} == {1, 2, 8, 9}
    assert abs(len(summ) - 0.15 * 4000) < 80  # 15% of the 4000 high-confidence pairs
    assert summ == list(splits.alignment_subset(many, "summarize", seed=0))
    assert summ != list(splits.alignment_subset(many, "summarize", seed=1))
    helpful = list(splits.alignment_subset(many, "helpful", seed=0))
    assert abs(len(helpful) - 900) < 90 and {r["confidence"] for r in helpful} == set(range(1, 10))
    with pytest.raises(ValueError, match="Unknown task"):
        list(splits.alignment_subset(many, "chess", seed=0))


def test_hh_eval_split_partitions():
    pairs = [{"id": f"h{i}"} for i in range(3000)]
    val = list(splits.hh_eval_split(pairs, "validation", 0))
    test = list(splits.hh_eval_split(pairs, "test", 0))
    assert len(val) + len(test) == 3000 and not {r["id"] for r in val} & {r["id"] for r in test}
    assert abs(len(val) - 2000) < 100


def test_swap_pair_maps_ai_orders_crosswise_and_mirrors_confidence():
    from rlaif_jax.data import splits

    rec = {
        "id": "x",
        "context": "c",
        "response1": "a",
        "response2": "b",
        "label": 0.7,
        "confidence": 2,
        "p_order1": 0.9,
        "p_order2": 0.5,
        "human_label": 1.0,
        "rationale": "",
    }
    out = splits.swap_pair(rec)
    assert (out["response1"], out["response2"]) == ("b", "a")
    assert out["label"] == pytest.approx(0.3) and out["human_label"] == 0.0
    # New response1 ("b") was shown first in the old swapped order: P(b ≻ a) = 1 - 0.5.
    assert out["p_order1"] == pytest.approx(0.5) and out["p_order2"] == pytest.approx(0.1)
    assert out["confidence"] == 8
    assert splits.swap_pair(out) == rec

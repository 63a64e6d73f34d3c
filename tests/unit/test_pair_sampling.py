"""pair_sampling.py: pairs of the first two distinct non-empty policy candidates, and
pairs of one response from each of two policies in a seeded random order (App. K)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from rlaif_jax import pair_sampling, policy_decode
from rlaif_jax.data import formats
from rlaif_jax.pair_sampling import cross_policy_pairs, distinct_pairs, order_coins


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


def test_cross_policy_pairs_put_each_policy_where_its_coin_says():
    prompts = [{"id": f"p{i}", "context": f"c{i}"} for i in range(5)]
    first = ["a0", "a1", "", "same", "a4"]
    second = ["b0", "b1", "b2", "same", "b4"]
    swap = [False, True, False, True, True]
    pairs, dropped = cross_policy_pairs(prompts, first, second, ("rl_rlhf", "sft"), swap)
    assert dropped == 2  # p2: an empty response; p3: both policies wrote the same text
    assert [(p["id"], p["response1"], p["response2"]) for p in pairs] == [
        ("p0", "a0", "b0"),
        ("p1", "b1", "a1"),
        ("p4", "b4", "a4"),
    ]
    assert [(p["policy1"], p["policy2"]) for p in pairs] == [
        ("rl_rlhf", "sft"),
        ("sft", "rl_rlhf"),
        ("sft", "rl_rlhf"),
    ]
    with pytest.raises(ValueError, match="coins"):
        cross_policy_pairs(prompts, first, second, ("a", "b"), swap[:-1])


def test_order_coins_are_seeded_per_split_and_balanced():
    coins = order_coins(2000, seed=3, split_index=0)
    assert coins.dtype == bool and coins.shape == (2000,)
    np.testing.assert_array_equal(coins, order_coins(2000, seed=3, split_index=0))
    assert not np.array_equal(coins, order_coins(2000, seed=3, split_index=1))
    assert not np.array_equal(coins, order_coins(2000, seed=4, split_index=0))
    assert 0.45 < coins.mean() < 0.55


class _Data:
    """TaskSources stand-in: 'prompts' and 'unlabeled' contexts of the train split."""

    task = "summarize"

    def source(self, role, split):
        assert split == "train"
        return [{"id": f"{role}-{i}", "context": f"{role} context {i}"} for i in range(6)]


def _fake_decoding(monkeypatch, calls):
    """policy_decode with no model: policy P answers '<P> <context> #<j>' for sample j,
    except that every policy answers 'dup' to 'prompts context 1' (a pair to drop)."""

    def open_policy(workdir, policy_dir, mesh, rules, task):
        return SimpleNamespace(config=None, vocab=None), {"dir": policy_dir}, None

    def decode_policy(config, params, vocab, layout, rows, mesh, rules, **kw):
        calls.append((params["dir"], [r["id"] for r in rows], kw["num_samples"], kw["seed"]))
        name = params["dir"]
        return [
            "dup" if r["context"] == "prompts context 1" else f"{name} {r['context']} #{j}"
            for r in rows
            for j in range(kw["num_samples"])
        ]

    monkeypatch.setattr(policy_decode, "open_policy", open_policy)
    monkeypatch.setattr(policy_decode, "decode_policy", decode_policy)


def test_two_policy_stage_writes_one_response_of_each_in_the_recorded_order(tmp_path, monkeypatch):
    calls = []
    _fake_decoding(monkeypatch, calls)
    metrics = pair_sampling.run_stage(
        workdir=str(tmp_path),
        policy_dir="rl_rlhf",
        second_policy_dir="sft",
        context_role="prompts",
        shuffle_contexts=True,
        max_pairs=5,
        temperature=1.0,
        seed=7,
        output_dir="combined_pairs",
        data=_Data(),
        mesh=object(),
        rules=object(),
    )
    # Each policy decoded the same 5 shuffled contexts once, one sample each, own seed.
    (a, ids_a, n_a, seed_a), (b, ids_b, n_b, seed_b) = calls
    assert (a, b, n_a, n_b) == ("rl_rlhf", "sft", 1, 1) and seed_a != seed_b
    assert ids_a == ids_b and len(ids_a) == 5
    all_ids = [f"prompts-{i}" for i in range(6)]
    assert set(ids_a) < set(all_ids) and ids_a != all_ids[:5]  # drawn at random
    rows = [json.loads(x) for x in (tmp_path / "combined_pairs" / "train.jsonl").open()]
    coins = order_coins(5, 7, 0)
    kept = [(i, c) for i, c in zip(ids_a, coins) if i != "prompts-1"]
    assert [r["id"] for r in rows] == [i for i, _ in kept]
    for r, (_, flip) in zip(rows, kept):
        assert (r["policy1"], r["policy2"]) == (("sft", "rl_rlhf") if flip else ("rl_rlhf", "sft"))
        assert r["response1"].startswith(r["policy1"]) and r["response2"].startswith(r["policy2"])
        assert r["response1"].endswith("#0") and r["response2"].endswith("#0")
    assert "prompts-1" in ids_a and metrics["train_dropped_identical"] == 1.0
    assert metrics["train_pairs"] == len(rows)
    assert metrics["train_second_policy_first"] == sum(r["policy1"] == "sft" for r in rows)
    assert metrics["order_seed"] == 7.0
    # The rows read back as unrated policy pairs (the label stage's input).
    back = list(formats.read_policy_pairs(str(tmp_path / "combined_pairs" / "train.jsonl")))
    assert [r["label"] for r in back] == [-1.0] * len(rows)


def test_one_policy_stage_keeps_its_contexts_and_candidates(tmp_path, monkeypatch):
    calls = []
    _fake_decoding(monkeypatch, calls)
    metrics = pair_sampling.run_stage(
        workdir=str(tmp_path), num_candidates=3, max_pairs=4, seed=2, data=_Data(),
        mesh=object(), rules=object(),
    )  # fmt: skip
    assert calls == [("sft", [f"unlabeled-{i}" for i in range(4)], 3, 2)]
    rows = [json.loads(x) for x in (tmp_path / "policy_pairs" / "train.jsonl").open()]
    assert [(r["response1"], r["response2"]) for r in rows] == [
        (f"sft unlabeled context {i} #0", f"sft unlabeled context {i} #1") for i in range(4)
    ]
    assert "policy1" not in rows[0] and "order_seed" not in metrics
    with pytest.raises(ValueError, match="context_role"):
        pair_sampling.run_stage(
            workdir=str(tmp_path), context_role="sft", data=_Data(), mesh=object(), rules=object()
        )

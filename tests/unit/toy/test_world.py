"""toy/world.py: determinism, record formats, unlabeled pairs and the alignment subset,
sources and speed, the toy human's labels of policy pairs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import gin
import pytest

from rlaif_jax.data import records, splits
from rlaif_jax.toy import oracle as toy_oracle
from rlaif_jax.toy import text as toy_text
from rlaif_jax.toy.text import ALL_WORDS
from rlaif_jax.toy.world import ToyWorld, ToyWorldConfig, toy_sources
from tests.unit.toy._helpers import SMALL


def _all_records(world: ToyWorld) -> dict:
    return {
        "sft": [world.sft_examples(s) for s in ("train", "validation", "test")],
        "rl": world.rl_prompts(),
        "eval": world.eval_prompts(),
        "prefs": [world.human_preferences(s) for s in ("train", "validation")],
        "unlabeled": world.unlabeled_pairs(),
        "alignment": world.alignment_subset(),
        "rating": world.rating_corpus(),
        "scores": world.rating_scores(),
    }


def _digest(world: ToyWorld) -> str:
    return hashlib.sha256(json.dumps(_all_records(world), sort_keys=True).encode()).hexdigest()


def test_deterministic_from_seed_in_any_process():
    a = _digest(ToyWorld(ToyWorldConfig(seed=3, **SMALL)))
    assert a == _digest(ToyWorld(ToyWorldConfig(seed=3, **SMALL)))
    assert a != _digest(ToyWorld(ToyWorldConfig(seed=4, **SMALL)))
    code = (
        "import sys; sys.path.insert(0, 'tests/unit/toy');"
        "from test_world import _digest, SMALL;"
        "from rlaif_jax.toy.world import ToyWorld, ToyWorldConfig;"
        "print(_digest(ToyWorld(ToyWorldConfig(seed=3, **SMALL))))"
    )
    root = os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == a
    # A record does not depend on how many others were generated.
    big = ToyWorld(ToyWorldConfig(seed=3, **{**SMALL, "num_pairs": 400}))
    assert (
        big.human_preferences()[:300]
        == ToyWorld(ToyWorldConfig(seed=3, **SMALL)).human_preferences()
    )


def test_records_follow_records_py():
    w = ToyWorld(ToyWorldConfig(seed=1, **SMALL))
    for split, n in (("train", 60), ("validation", 20), ("test", 30)):
        sft = w.sft_examples(split)
        assert len(sft) == n and all(tuple(r) == records.SFT_FEATURES for r in sft)
    for prompts, n in ((w.rl_prompts(), 40), (w.eval_prompts(), 30)):
        assert len(prompts) == n and all(tuple(r) == records.PROMPT_FEATURES for r in prompts)
    assert [r["id"] for r in w.eval_prompts()] == [r["id"] for r in w.sft_examples("test")]
    pair_sets = [w.human_preferences("train"), w.human_preferences("validation")]
    pair_sets += [w.unlabeled_pairs(), w.alignment_subset(), w.rating_corpus()]
    for pairs in pair_sets:
        for r in pairs:
            assert tuple(r) == records.PAIR_FEATURES
            assert isinstance(r["label"], float) and r["label"] in (0.0, 1.0)
            assert isinstance(r["confidence"], int) and 1 <= r["confidence"] <= 9
            # 9-point scale: 1..4 lean response1, 6..9 lean response2, consistent with label.
            assert (r["confidence"] < 5) == (r["label"] == 1.0)
            assert r["response1"] != r["response2"]
            assert r["context"].startswith("SUBREDDIT: r/") and "\nTITLE: " in r["context"]
    assert len(pair_sets[0]) == 300 and len(pair_sets[1]) == 50 and len(pair_sets[4]) == 80
    # Post sets are disjoint namespaces with unique ids.
    ids = [
        r["id"] for rs in (w.sft_examples("train"), w.rl_prompts(), w.eval_prompts()) for r in rs
    ]
    ids += [r["id"] for rs in pair_sets[:2] + pair_sets[4:] for r in rs]
    assert len(ids) == len(set(ids))
    train_ctx = {r["context"] for r in w.sft_examples("train")}
    assert not train_ctx & {r["context"] for r in w.eval_prompts()}


def test_unlabeled_pairs_and_alignment_subset():
    w = ToyWorld(ToyWorldConfig(seed=2, **{**SMALL, "num_pairs": 2000}))
    human = {r["id"]: r for r in w.human_preferences()}
    unl = w.unlabeled_pairs()
    assert [r["id"] for r in unl] == list(human)
    swapped = 0
    for r in unl:
        h = human[r["id"]]
        if r["response1"] == h["response1"]:
            assert r == h
        else:
            swapped += 1
            assert (r["response1"], r["response2"]) == (h["response2"], h["response1"])
            assert r["label"] == 1.0 - h["label"] and r["confidence"] == 10 - h["confidence"]
    assert 0.4 < swapped / len(unl) < 0.6
    align = w.alignment_subset()
    assert 0.1 * 2000 * 0.3 < len(align) < 0.2 * 2000 * 0.6
    assert all(r["confidence"] in splits.HIGH_CONFIDENCE for r in align)
    assert {r["id"] for r in align} <= set(human)
    capped = ToyWorld(ToyWorldConfig(seed=2, **{**SMALL, "num_pairs": 2000, "num_alignment": 5}))
    assert capped.alignment_subset() == align[:5]


def test_sources_corpus_config_and_speed():
    gin.parse_config("ToyWorldConfig.num_rl_prompts = 7\nToyWorldConfig.num_sft = 60")
    cfg = ToyWorldConfig(
        **{k: v for k, v in SMALL.items() if k not in ("num_rl_prompts", "num_sft")}
    )
    assert cfg.num_rl_prompts == 7
    src = toy_sources(cfg)
    for role, by_split in src.items():
        for split, source in by_split.items():
            recs = list(source)
            assert recs and all(tuple(r) == source.features for r in recs), (role, split)
    assert len(list(src["prompts"]["train"])) == 7
    texts = list(ToyWorld(cfg).corpus_texts(extra=["Preferred Summary="]))
    assert texts[-1] == "Preferred Summary=" and set(ALL_WORDS) <= set(texts[0].split())
    with pytest.raises(ValueError, match="ToyWorldConfig.num_pairs"):
        ToyWorldConfig(num_pairs=-1)
    with pytest.raises(ValueError, match="ToyWorldConfig.human_tau"):
        ToyWorldConfig(human_tau=0.0)
    with pytest.raises(ValueError, match="split"):
        ToyWorld(cfg).human_preferences("test")
    t0 = time.perf_counter()
    big = ToyWorld(ToyWorldConfig(num_sft=10000, num_pairs=10000))
    big.sft_examples(), big.human_preferences()
    assert time.perf_counter() - t0 < 20.0  # ~2 s alone on one core


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

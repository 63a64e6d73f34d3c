"""Toy world: determinism, record formats, the oracle, the human and the bootstrap rater."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys
import time

import gin
import numpy as np
import pytest

from rlaif_jax.data import records, splits
from rlaif_jax.toy.oracle import (
    BootstrapRater,
    HumanRater,
    judge,
    oracle_prefers,
    oracle_score,
    world_statistics,
)
from rlaif_jax.toy.summaries import (
    EDIT_KINDS,
    PROFILES,
    edited_facts,
    generate_summary,
    summary_facts,
)
from rlaif_jax.toy.text import (
    ALL_WORDS,
    MAIN_SUBJECTS,
    OBJECTS,
    PHANTOM_OBJECTS,
    SIDE_OBJECTS,
    SIDE_SUBJECTS,
    SUBJECTS,
    VERB_OF,
    ContextError,
    make_post,
    parse_context,
    parse_summary,
    render_summary,
)
from rlaif_jax.toy.world import ToyWorld, ToyWorldConfig, toy_sources

SMALL = dict(
    num_sft=60,
    num_sft_validation=20,
    num_pairs=300,
    num_heldout_pairs=50,
    num_rl_prompts=40,
    num_eval_prompts=30,
    num_rating_corpus=80,
    num_alignment=1000,
)


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


@pytest.fixture(scope="module")
def world() -> ToyWorld:
    return ToyWorld(ToyWorldConfig(seed=0))  # default sizes: the distribution the demo sees


def test_deterministic_from_seed_in_any_process():
    a = _digest(ToyWorld(ToyWorldConfig(seed=3, **SMALL)))
    assert a == _digest(ToyWorld(ToyWorldConfig(seed=3, **SMALL)))
    assert a != _digest(ToyWorld(ToyWorldConfig(seed=4, **SMALL)))
    code = (
        "import sys; sys.path.insert(0, 'tests/unit');"
        "from test_toy_world import _digest, SMALL;"
        "from rlaif_jax.toy.world import ToyWorld, ToyWorldConfig;"
        "print(_digest(ToyWorld(ToyWorldConfig(seed=3, **SMALL))))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def test_the_real_path_never_imports_the_toy_package():
    """DESIGN §2: every stage, the pipeline and the CLI import without `rlaif_jax.toy`
    (the toy world comes in only through its gin files), and the toy presets with it."""
    code = (
        "import sys\n"
        "import rlaif_jax.cli, rlaif_jax.pipeline, rlaif_jax.sft, rlaif_jax.reward\n"
        "import rlaif_jax.labeling.stage, rlaif_jax.labeling.scoring, rlaif_jax.pair_sampling\n"
        "import rlaif_jax.rl.stage, rlaif_jax.rl.roles, rlaif_jax.rl.runner\n"
        "import rlaif_jax.evaluation.stage, rlaif_jax.data.tasks, rlaif_jax.bench\n"
        "from rlaif_jax.models.config import PRESETS\n"
        "print(sorted(m for m in sys.modules if m.startswith('rlaif_jax.toy')))\n"
        "print(sorted(p for p in PRESETS if p.startswith('toy_')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout


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


def _corruptions(post, rng: random.Random) -> dict[str, str]:
    key, side = list(post.key_facts), list(post.side_facts)
    s, v, o = key[0]
    wrong_obj = next(x for x in OBJECTS if x not in {f[2] for f in post.facts})
    wrong_subj = next(x for x in SUBJECTS if x not in {f[0] for f in post.facts})
    return {
        "missing_key": render_summary(key[1:]),
        "side_fact": render_summary(key + [side[0]]),
        "invented_object": render_summary([(s, v, wrong_obj)] + key[1:]),
        "invented_extra": render_summary(key + [(s, v, wrong_obj)]),
        "mixed_up_person": render_summary([(wrong_subj, v, o)] + key[1:]),
        "mixed_up_person_extra": render_summary(key + [(wrong_subj, v, o)]),
        "repeated": render_summary(key + [key[-1]]),
        "truncated": render_summary(key)[: -len(" .")],
        "truncated_object": render_summary(key)[: -len(f" {key[-1][2]} .")],
        "word_salad_tail": render_summary(key) + " my the again",
        "reordered_words": render_summary(key[:-1]) + f" {key[-1][1]} {key[-1][0]} {key[-1][2]} .",
    }


def test_oracle_prefers_perfect_summary_over_each_corruption():
    rng = random.Random(0)
    for _ in range(300):
        post = make_post(rng)
        perfect = render_summary(post.key_facts)
        assert oracle_score(post.context, perfect) == pytest.approx(1.0)
        assert parse_context(post.context) == (post.main_subject, post.facts)
        for name, bad in _corruptions(post, rng).items():
            q = oracle_score(post.context, bad)
            assert q < 1.0, (name, bad)
            assert oracle_prefers(post.context, perfect, bad) > 0.5, name
    j = judge(post.context, render_summary(post.key_facts + post.key_facts[:1]))
    assert (j.key_covered, j.repeated, j.invented, j.broken) == (len(post.key_facts), 1, 0, 0)


def test_errors_are_visible_from_summary_tokens():
    """Design for tiny models: side facts are about bystanders who never title a post, and
    most invented facts use an object that no post mentions."""
    rng = random.Random(3)
    invented = phantom = 0
    for _ in range(400):
        post = make_post(rng)
        assert post.main_subject in MAIN_SUBJECTS
        assert all(f[0] in SIDE_SUBJECTS for f in post.side_facts) and post.side_facts
        words = set(post.context.split())
        assert not words & set(PHANTOM_OBJECTS) and not words & set(SIDE_SUBJECTS) - {
            f[0] for f in post.side_facts
        }
        j_text = generate_summary(post, "hallucinating", rng)
        for f in parse_summary(j_text).facts:
            if f not in post.facts:
                invented += 1
                phantom += f[2] in PHANTOM_OBJECTS
    assert invented > 200 and 0.7 < phantom / invented < 0.95


def test_oracle_parses_garbage_and_scores_it_low(world):
    ctx = world.eval_prompts()[0]["context"]
    rng = random.Random(0)
    salad = " ".join(rng.choice(ALL_WORDS) for _ in range(60))
    garbage = [
        "",
        " . . . . ",
        "\x00\ufffd\u200b ☃ 🤖",
        "the the the the the the the the the the",
        "TL;DR: " * 50,
        salad,
        " ".join(["landlord"] * 500),
        "12345 " * 30 + "<pad> </s>",
        ctx,  # copying the whole post
    ]
    ref_mean = np.mean(
        [oracle_score(r["context"], r["response"]) for r in world.sft_examples("test")]
    )
    for g in garbage:
        q = oracle_score(ctx, g)
        assert np.isfinite(q) and q <= 0.0, (g[:40], q)
        assert q < ref_mean
    assert oracle_score(ctx, salad) < -0.5 and oracle_score(ctx, ctx) < -0.5
    assert parse_summary("cat lost keys.cat lost keys").facts == (("cat", "lost", "keys"),)
    with pytest.raises(ContextError):
        oracle_score("Human: hi\n\nAssistant:", "cat lost keys .")
    with pytest.raises(ValueError):
        oracle_score("SUBREDDIT: r/x\nTITLE: my cat\nPOST: nothing here .", "cat lost keys .")


def test_oracle_prefers_is_a_fair_probability(world):
    r = world.human_preferences()[0]
    c, a, b = r["context"], r["response1"], r["response2"]
    assert oracle_prefers(c, a, a) == 0.5
    assert oracle_prefers(c, a, b) + oracle_prefers(c, b, a) == pytest.approx(1.0)
    assert (oracle_prefers(c, a, b) > 0.5) == (oracle_score(c, a) > oracle_score(c, b))


def test_human_self_agreement_in_band(world):
    stats = world_statistics(world)
    assert 0.70 <= stats["human_self_agreement_requeried"] <= 0.80
    assert 0.70 <= stats["human_self_agreement_expected"] <= 0.80
    # The human follows the oracle, better when confident (paper: confidence 1/2/8/9).
    assert 0.75 < stats["human_oracle_agreement"] < stats["human_oracle_agreement_high_confidence"]
    assert 0.25 < stats["human_high_confidence_fraction"] < 0.75
    # Repeated queries of one pair at the rater level: the BT probability.
    human, rng = HumanRater(), random.Random(0)
    votes = [human.sample(0.8, 0.5, rng)[0] for _ in range(4000)]
    assert abs(np.mean(votes) - human.prob(0.8, 0.5)) < 0.03


def test_bootstrap_rater_blind_spots_and_position_bias():
    rater, rng = BootstrapRater(), random.Random(0)
    blind_wins = tie_first = clear_right = n = 0
    for _ in range(300):
        post = make_post(rng)
        main, facts = post.main_subject, post.facts
        perfect = render_summary(post.key_facts)
        c = _corruptions(post, rng)
        for bad in (c["invented_extra"], c["mixed_up_person_extra"]):
            # Blind: equal quality for the rater, strictly worse for the oracle.
            assert rater.quality(main, facts, bad) == rater.quality(main, facts, perfect)
            assert oracle_score(post.context, bad) < 1.0
        for bad in (c["repeated"], c["side_fact"], c["truncated"], c["missing_key"]):
            assert rater.quality(main, facts, bad) < rater.quality(main, facts, perfect)
        # Near tie with the corrupted summary shown first: the rater takes position 1.
        blind_wins += rater.sample(rater.quality(main, facts, c["invented_extra"]), 1.0, rng)[0]
        tie_first += rater.sample(1.0, 1.0, rng)[0]
        # A clear difference (a broken, incomplete summary) beats the bias.
        worse = rater.quality(main, facts, c["truncated_object"])
        clear_right += 1.0 - rater.sample(worse, 1.0, rng)[0]
        n += 1
    assert blind_wins / n > 0.75 and tie_first / n > 0.75
    assert clear_right / n > 0.8
    assert rater.prob_first(0.5, 0.5) == pytest.approx(1 / (1 + np.exp(-rater.position_bias)))


def test_bootstrap_rater_invented_penalty_partly_opens_the_blind_spot():
    rng = random.Random(3)
    seeing = BootstrapRater(invented_penalty=0.15)
    for _ in range(50):
        post = make_post(rng)
        c = _corruptions(post, rng)
        perfect = render_summary(post.key_facts)
        main, facts = post.main_subject, post.facts
        assert seeing.quality(main, facts, c["invented_extra"]) == pytest.approx(
            seeing.quality(main, facts, perfect) - 0.15
        )
        blind = BootstrapRater()
        assert blind.quality(main, facts, c["invented_extra"]) == blind.quality(
            main, facts, perfect
        )
        rationale = seeing.rationale(post.main_subject, post.facts, c["invented_extra"], perfect, 2)
        assert "summary 1 covers" in rationale and "invents 1 facts" in rationale


def test_edited_facts_change_content_not_length():
    rng = random.Random(4)
    kinds = set()
    for _ in range(300):
        post = make_post(rng)
        facts = summary_facts(post, PROFILES["good"], rng)
        edited, kind = edited_facts(post, facts, rng)
        kinds.add(kind)
        assert len(edited) == len(facts) and sum(a != b for a, b in zip(facts, edited)) == 1
        before, after = (oracle_score(post.context, render_summary(f)) for f in (facts, edited))
        # Taking a stated key fact away always costs; restoring a missing one always helps.
        assert (after > before) if kind == "key" else (after < before)
    assert kinds >= set(EDIT_KINDS)


def test_insertions_add_or_remove_one_sentence_and_length_does_not_decide():
    rng = random.Random(5)
    kinds, longer_better = set(), []
    seeing = BootstrapRater(invented_penalty=0.5)
    for _ in range(400):
        post = make_post(rng)
        facts = summary_facts(post, PROFILES[rng.choice(["good", "lazy", "chatty"])], rng)
        edited, kind = edited_facts(post, facts, rng, insert=True)
        kinds.add(kind)
        assert len(edited) == len(facts) + (-1 if kind == "-key" else 1)
        before, after = (judge(post.context, render_summary(f)) for f in (facts, edited))
        qb = [
            seeing.quality(post.main_subject, post.facts, render_summary(f))
            for f in (facts, edited)
        ]
        if kind in ("+key", "-key"):
            assert after.key_covered == before.key_covered + (1 if kind == "+key" else -1)
            assert (after.score > before.score) == (kind == "+key") and (qb[1] > qb[0]) == (
                kind == "+key"
            )
        else:
            errors = [j.side + j.invented + j.repeated for j in (before, after)]
            assert after.key_covered == before.key_covered and errors[1] == errors[0] + 1
            assert after.score < before.score and qb[1] < qb[0]  # the rater sees it too
        longer_better.append((len(edited) > len(facts)) == (after.score > before.score))
    assert kinds == {"+key", "-key"} | {"+" + k for k in EDIT_KINDS}
    assert 0.35 < np.mean(longer_better) < 0.65


def test_contrastive_rating_pairs_decouple_length_from_the_rater():
    world = ToyWorld(
        ToyWorldConfig(**{**SMALL, "num_rating_corpus": 400}, rating_edit_fraction=1.0)
    )
    recs, infos = world._pairs("rating", 400)
    edits = [i for i in infos if any("+" in g for g in i.generators)]
    assert len(edits) > 350  # a few edits restate a sentence and fall back to generators
    same_length = [
        len(parse_summary(r["response1"]).facts) == len(parse_summary(r["response2"]).facts)
        for r, i in zip(recs, infos)
        if i in edits
    ]
    assert np.mean(same_length) > 0.95
    plain = ToyWorld(ToyWorldConfig(**SMALL))._pairs("rating", 80)[1]
    assert not any("+" in g for i in plain for g in i.generators)  # off by default
    with pytest.raises(ValueError, match="rating_edit_fraction"):
        ToyWorldConfig(rating_edit_fraction=1.5)
    inserts = ToyWorld(
        ToyWorldConfig(
            **{**SMALL, "num_rating_corpus": 200}, rating_edit_fraction=1.0, rating_insert_share=1.0
        )
    )._pairs("rating", 200)[1]
    # Generator names: 'good+side' for a swap, 'good++side' for an insertion.
    assert sum(any("++" in g for g in i.generators) for i in inserts) > 150
    assert not any("++" in g for i in edits for g in i.generators)  # swaps only by default


def test_rating_corpus_shows_position_bias(world):
    recs = world.rating_corpus()
    infos = world.pair_infos("rating")
    near = [r["label"] for r, i in zip(recs, infos) if abs(i.rater[0] - i.rater[1]) < 0.1]
    assert len(near) > 200 and np.mean(near) > 0.75  # first-shown preferred on near-ties
    far = [
        r["label"] == float(i.rater[0] > i.rater[1])
        for r, i in zip(recs, infos)
        if abs(i.rater[0] - i.rater[1]) >= 0.5
    ]
    assert np.mean(far) > 0.85
    scores = world.rating_scores()
    assert len(scores) == 2 * len(recs) and all(1 <= s <= 10 for _, _, s in scores)
    row = recs[0]
    rat = world.rating_rationale(row, 2)
    assert rat.startswith("summary 1 covers ") and rat.endswith("summary 2 is better .")


def test_bootstrap_alignment_above_chance_below_perfect_and_debiasing_helps(world):
    s = world_statistics(world)
    for k in ("", "_high_confidence"):
        single = s[f"bootstrap_human_agreement{k}_single_order"]
        both = s[f"bootstrap_human_agreement{k}_both_orders"]
        assert 0.6 <= single < both < 0.95, (k, single, both)
    assert s["bootstrap_oracle_agreement_both_orders"] < 0.95
    assert 0.15 < s["bootstrap_same_position_rate"] < 0.8
    # Headroom: the good generator and the perfect summary beat the SFT references.
    q = s["oracle_score_mean"]
    assert q["reference"] + 0.2 < q["good"] < q["perfect"]
    assert q["hallucinating"] < q["reference"]


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


def test_soft_rating_corpus_carries_the_raters_probability(world):
    hard, soft = world.rating_corpus(both_orders=True), world.rating_corpus(True, soft=True)
    infos = world._pairs("rating", world.config.num_rating_corpus)[1]
    assert [r["id"] for r in hard] == [r["id"] for r in soft]
    for k, info in enumerate(infos[:20]):
        shown, swapped = soft[2 * k], soft[2 * k + 1]
        assert shown["label"] == pytest.approx(world.rater.prob_first(*info.rater))
        assert swapped["label"] == pytest.approx(world.rater.prob_first(*info.rater[::-1]))
        assert 0.0 < shown["label"] < 1.0
    # A noiseless rater's probability is its (deterministic) choice.
    hard_rater = dataclasses.replace(world.rater, noise=0.0)
    assert hard_rater.prob_first(0.5, 0.5) == 1.0 and hard_rater.prob_first(0.0, 0.9) == 0.0


def test_rating_corpus_both_orders_are_two_queries_of_the_rater(world):
    one, both = world.rating_corpus(), world.rating_corpus(both_orders=True)
    assert both[0::2] == one and len(both) == 2 * len(one)
    infos = world.pair_infos("rating")
    first_shown = []
    for rec, swapped, info in zip(one, both[1::2], infos):
        assert swapped["id"] == rec["id"] + "-swapped"
        assert (swapped["response1"], swapped["response2"]) == (rec["response2"], rec["response1"])
        assert swapped["context"] == rec["context"] and (swapped["confidence"] < 5) == (
            swapped["label"] == 1.0
        )
        if abs(info.rater[0] - info.rater[1]) < 1e-9:  # a tie for the rater: only the bias
            first_shown += [rec["label"], swapped["label"]]
    # On the rater's ties both orders mostly pick the first-shown summary (its position
    # bias), so the two labels of a pair disagree about which summary is better.
    assert len(first_shown) > 100 and np.mean(first_shown) > 0.75


def test_looping_generator_repeats_and_every_error_is_word_visible():
    rng = random.Random(5)
    repeats = []
    for _ in range(300):
        post = make_post(rng)
        assert all(f[1] == VERB_OF[f[2]] for f in post.facts)
        assert {f[2] for f in post.side_facts} <= set(SIDE_OBJECTS)
        assert not {f[2] for f in post.key_facts} & set(SIDE_OBJECTS)
        repeats.append(judge(post.context, generate_summary(post, "looping", rng)).repeated)
    assert np.mean(repeats) > 1.0 and max(repeats) >= 3

"""The labeler procedure with a rigged model: both orders in one call, position bias
removed by averaging, CoT two-step, self-consistency, harmless inversion, d-RLAIF."""

from __future__ import annotations

import contextlib
import math
import re

import numpy as np
import pytest

from rlaif_jax.labeling import debias, direct, render
from rlaif_jax.labeling import prompts as P
from rlaif_jax.labeling.labeler import Labeler, LabelerSettings


class CharVocab:
    """One token per character (test-only); ids >= 3 so 0/1/2 stay pad/eos/unk.
    With ten=True, "10" is one piece (id TEN), like the project's SentencePiece vocabs."""

    eos_id, pad_id, bos_id = 1, 0, None
    TEN = 100_000

    def __init__(self, ten=False):
        self.ten = ten

    def encode(self, s):
        out, i = [], 0
        while i < len(s):
            if self.ten and s.startswith("10", i):
                out.append(self.TEN)
                i += 2
            else:
                out.append(ord(s[i]) + 3)
                i += 1
        return out

    def decode(self, ids):
        return "".join("10" if i == self.TEN else chr(i - 3) for i in ids if i >= 3)


def direct_q(target):
    """The stub's distribution over scores 1..10 (70% of the vocabulary mass)."""
    q = np.exp([-abs(i + 1 - target) * 2.0 for i in range(10)])
    return 0.7 * q / q.sum()


def quality(text: str) -> int:
    return text.count("good")


class RiggedScorer:
    """A stub 'model': reads the shown responses from the prompt text and answers with
    logit(P("1")) = quality(shown 1) − quality(shown 2) + position_bias. With a
    rationale present ('Summary k is better'), it follows the rationale instead.
    Records every call so tests can check batching."""

    def __init__(self, vocab, position_bias=1.5):
        self.vocab, self.bias, self.calls, self.gen_calls = vocab, position_bias, [], []

    def _text(self, prefix, suffix):
        return self.vocab.decode(list(prefix) + list(suffix))

    def score(self, prefix, suffixes, candidate_ids):
        self.calls.append(len(suffixes))
        out = []
        for s in suffixes:
            text = self._text(prefix, s)
            if "SCORE:" in text:  # d-RLAIF: scores peaked at 1 + 3 * quality
                m = re.search(r"SUMMARY: (.*)\n", text)
                q = direct_q(min(10, 1 + 3 * quality(m.group(1))))
                if text.endswith("SCORE: 1"):  # second piece of a two-piece "10"
                    out.append([math.log(q[9] / (q[0] + q[9]))])
                elif self.vocab.ten:
                    out.append(np.log(q).tolist())
                else:  # "1" is also the first piece of "10"
                    lp = np.log(q)
                    lp[0] = lp[9] = math.log(q[0] + q[9])
                    out.append(lp.tolist())
                continue
            blocks = re.findall(r"(?:Summary|Response) ([12]) - (.*)", text.split("Sample")[-1])
            shown = dict(blocks[-2:])
            rat = re.findall(r"Rationale: (?:Summary|Response) ([12]) is better", text)
            if rat:
                z = 2.0 if rat[-1] == "1" else -2.0
            else:
                z = quality(shown["1"]) - quality(shown["2"]) + self.bias
            p1 = 1 / (1 + math.exp(-z))
            # Log-probs over the full vocabulary: the two candidates hold 60% of the mass.
            out.append([math.log(0.6 * p1), math.log(0.6 * (1 - p1))])
        return np.array(out)

    def generate(self, prefix, suffixes, *, max_new_tokens, temperature, top_k, num_samples, seed):
        self.gen_calls.append((len(suffixes), temperature, top_k, num_samples))
        rng = np.random.default_rng(seed)
        out = []
        for s in suffixes:
            text = self._text(prefix, s)
            blocks = dict(re.findall(r"(?:Summary|Response) ([12]) - (.*)", text)[-2:])
            better = "1" if quality(blocks["1"]) >= quality(blocks["2"]) else "2"
            row = []
            for _ in range(num_samples):
                pick = better if temperature == 0 or rng.uniform() < 0.75 else "12"[better == "1"]
                row.append(self.vocab.encode(f" Summary {pick} is better.\nPreferred Summary=1"))
            out.append(row)
        return out


def pairs(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.integers(0, 3, size=2)
        out.append(
            {
                "id": f"p{i}",
                "context": f"post {i}",
                "response1": "good " * a + "x",
                "response2": "good " * b + "y",
                "label": float(a > b) if a != b else 0.5,
                "confidence": 9,
            }
        )
    return out


def test_position_bias_removed_by_averaging_orders():
    vocab = CharVocab()
    scorer = RiggedScorer(vocab, position_bias=1.5)
    lab = Labeler(
        scorer, vocab, render.PromptVariant("summarize", "base"), LabelerSettings(pairs_per_call=4)
    )
    data = pairs(24)
    recs = lab.label(data)
    assert [r["id"] for r in recs] == [p["id"] for p in data]
    # Both orders of every pair travel in the same call: 2 x pairs_per_call prompts.
    assert scorer.calls == [8] * 6
    for p, r in zip(data, recs):
        d = quality(p["response1"]) - quality(p["response2"])
        s = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
        assert r["p_order1"] == pytest.approx(s(d + 1.5))  # P₁("1")
        assert r["p_order2"] == pytest.approx(s(d - 1.5))  # P₂("2") = 1 - s(-d + 1.5)
        # The bias cancels exactly for ties; the soft label keeps the content's direction.
        assert r["label"] == pytest.approx(0.5 * (s(d + 1.5) + s(d - 1.5)))
        if d == 0:
            assert r["label"] == pytest.approx(0.5) and r["p_order1"] > 0.8
        else:
            assert (r["label"] > 0.5) == (d > 0)
        assert r["human_label"] == p["label"] and r["rationale"] == ""
    same = debias.same_position_preferred(
        np.array([r["p_order1"] for r in recs]), np.array([r["p_order2"] for r in recs])
    )
    assert same.mean() > 0.3  # the biased labeler often picks the first shown


def test_harmless_labels_inverted():
    vocab = CharVocab()
    data = pairs(6)
    harm = Labeler(
        RiggedScorer(vocab),
        vocab,
        render.PromptVariant("harmless", num_shots=2),
        LabelerSettings(max_len=4096),
    ).label(data)
    help_ = Labeler(RiggedScorer(vocab), vocab, render.PromptVariant("helpful")).label(data)
    for h, g in zip(harm, help_):
        # Same rigged answers; the harmless prompt's answer means "more harmful".
        assert h["label"] == pytest.approx(1 - g["label"])
        assert h["p_order1"] == pytest.approx(1 - g["p_order1"])


def test_cot_two_step_greedy():
    vocab = CharVocab()
    scorer = RiggedScorer(vocab, position_bias=3.0)
    v = render.PromptVariant("summarize", "detailed", cot=True)
    lab = Labeler(
        scorer, vocab, v, LabelerSettings(pairs_per_call=8, cot_max_tokens=64, max_len=4096)
    )
    data = [p for p in pairs(12) if p["label"] != 0.5]
    recs = lab.label(data)
    assert scorer.gen_calls[0][1:] == (0.0, 0, 1)  # greedy, one rationale
    for p, r in zip(data, recs):
        # The stub follows its (correct) rationale in both orders: bias gone entirely.
        want = 1 / (1 + math.exp(-2.0))
        assert r["label"] == pytest.approx(want if p["label"] == 1.0 else 1 - want)
        # The rationale is cut before the answer the model wrote itself.
        assert r["rationale"].startswith("Summary") and "Preferred" not in r["rationale"]


def test_self_consistency_averages_debiased_samples():
    vocab = CharVocab()
    scorer = RiggedScorer(vocab)
    s = LabelerSettings(pairs_per_call=4, num_samples=5, temperature=0.7)
    lab = Labeler(scorer, vocab, render.PromptVariant("summarize", "base", cot=True), s)
    data = [p for p in pairs(8, seed=3) if p["label"] != 0.5]
    recs = lab.label(data, seed=11)
    assert scorer.gen_calls[0][1:] == (0.7, P.SELF_CONSISTENCY_TOP_K, 5)
    # NumPy reference: regenerate the same rationales and average per-sample labels.
    ref_scorer = RiggedScorer(vocab)
    lab2 = Labeler(ref_scorer, vocab, render.PromptVariant("summarize", "base", cot=True), s)
    again = lab2.label(data, seed=11)
    assert [r["label"] for r in recs] == [r["label"] for r in again]  # seeded
    sig = 1 / (1 + math.exp(-2.0))
    for r in recs:
        # each sample's debiased p is sig or 1 - sig per order -> mean of 2S values
        k = round((r["label"] - (1 - sig)) / (2 * sig - 1) * 10)
        assert r["label"] == pytest.approx((1 - sig) + k / 10 * (2 * sig - 1))
    with pytest.raises(ValueError, match="temperature"):
        LabelerSettings(num_samples=4, temperature=0.0)


@pytest.mark.parametrize("ten", [True, False], ids=["ten_one_piece", "ten_two_pieces"])
def test_direct_scorer_expected_score(ten):
    vocab = CharVocab(ten=ten)
    ds = direct.DirectScorer(RiggedScorer(vocab), vocab)
    assert bool(ds.candidates.multi) == (not ten)
    rewards = ds(["post a", "post b", "post c"], ["x", "good x", "good good good x"])
    scores = ds.expected_scores(["post a", "post b", "post c"], ["x", "good x", "good good good x"])
    assert rewards.dtype == np.float32 and rewards.shape == (3,)
    assert scores[0] < scores[1] < scores[2] and 1 <= scores.min() and scores.max() <= 10
    np.testing.assert_allclose(rewards, (scores - 5.5) / 4.5, rtol=1e-6)
    # NumPy reference: Σ i·q_i / Σ q_i of the stub's true score distribution, also when
    # "10" is read as "1" then "0" (chain rule).
    for s, target in zip(scores, (1, 4, 10)):
        q = direct_q(target)
        assert s == pytest.approx((q * np.arange(1, 11)).sum() / q.sum(), rel=1e-5)
    with (
        pytest.raises(Exception, match="not a single token")
        if not ten
        else contextlib.nullcontext()
    ):
        direct.DirectScorer(RiggedScorer(vocab), vocab, ten_mode="error")


def test_bootstrap_examples_match_inference_layout():
    from rlaif_jax.labeling import tokens
    from rlaif_jax.toy import bootstrap_data

    vocab = CharVocab(ten=True)
    v = render.PromptVariant("summarize", "base")
    corpus = [
        {"context": "c", "response1": "a", "response2": "b", "label": 0.0},
        {"context": "c", "response1": "a", "response2": "b", "label": 0.5},  # tie: skipped
    ]
    (ex,) = bootstrap_data.preference_examples(corpus, vocab, [v], max_len=4096)
    r = render.render_preference(v, "c", "a", "b")
    t = tokens.tokenize_prompt(vocab, r.prefix, r.suffix)
    # What the labeler reads at inference is exactly the training prompt; target "2".
    assert ex.ids[: ex.target_start] == t.prefix + t.suffix
    assert vocab.decode(ex.ids[ex.target_start :]) == "2"
    (d,) = bootstrap_data.direct_examples([("c", "a", 10)], vocab, render.DirectPrompt(), 4096)
    assert vocab.decode(d.ids).endswith("SCORE: 10") and d.ids[-1] == CharVocab.TEN
    batch = bootstrap_data.to_batch([ex, d], 2048, vocab.pad_id)
    assert batch["loss_mask"].sum() == 2 and batch["loss_mask"][0, ex.target_start] == 1
    assert not batch["alt_weight"].any()
    # Soft targets: the likelier answer is the token, the other one the alternative.
    soft_rows = [dict(corpus[0], label=0.2), dict(corpus[0], label=0.9)]
    s2, s1 = bootstrap_data.preference_examples(soft_rows, vocab, [v], 4096, soft=True)
    assert vocab.decode(s2.ids[-1:]) == "2" and vocab.decode([s2.alt_id]) == "1"
    assert vocab.decode(s1.ids[-1:]) == "1" and vocab.decode([s1.alt_id]) == "2"
    assert (s2.alt_weight, s1.alt_weight) == pytest.approx((0.2, 0.1))
    batch = bootstrap_data.to_batch([s2, s1], 2048, vocab.pad_id)
    assert batch["alt_weight"][0, len(s2.ids) - 1] == pytest.approx(0.2)
    assert batch["alt_tokens"][1, len(s1.ids) - 1] == s1.alt_id
    assert batch["alt_weight"].sum() == pytest.approx(0.3)


def _fake_decoding(monkeypatch):
    """A stand-in `rlaif_jax.decoding.score` with a bag-of-tokens 'model' (test-only), to
    check ModelScorer's bucketing, padding, ordering and shared-prefix plumbing."""
    import importlib
    import sys
    import types

    import jax.numpy as jnp

    def candidate_distribution(config, params, tokens, lengths, cands):
        L = tokens.shape[1]
        mask = jnp.arange(L)[None, :] < lengths[:, None]
        feats = jnp.where(mask[..., None], params[tokens], 0.0).sum(1)  # [B, V]
        last = jnp.take_along_axis(tokens, (lengths - 1)[:, None], axis=1)[:, 0]
        logits = feats * 0.1 + params[last]
        lp = jax.nn.log_softmax(logits, axis=-1)[:, cands]
        return jnp.exp(lp) / jnp.exp(lp).sum(-1, keepdims=True), lp

    def candidate_distribution_shared_prefix(config, params, prefix, suffix, lengths, cands):
        B = suffix.shape[0]
        toks = jnp.concatenate([jnp.broadcast_to(prefix, (B, prefix.shape[0])), suffix], 1)
        return candidate_distribution(config, params, toks, lengths + prefix.shape[0], cands)

    import jax

    fake = types.ModuleType("rlaif_jax.decoding.score")
    fake.candidate_distribution = candidate_distribution
    fake.candidate_distribution_shared_prefix = candidate_distribution_shared_prefix
    pkg = importlib.import_module("rlaif_jax.decoding")
    monkeypatch.setitem(sys.modules, "rlaif_jax.decoding.score", fake)
    monkeypatch.setattr(pkg, "score", fake, raising=False)
    return candidate_distribution


def test_model_scorer_batching_and_shared_prefix(monkeypatch):
    import jax

    from rlaif_jax.labeling.scoring import ModelScorer
    from rlaif_jax.sharding import mesh as mesh_lib
    from rlaif_jax.sharding import rules as rules_lib

    ref = _fake_decoding(monkeypatch)
    V = 64
    params = jax.random.normal(jax.random.PRNGKey(0), (V, V))
    mesh = mesh_lib.make_mesh(data=-1, devices=jax.devices()[:4])
    rules = rules_lib.get_rules("dp")
    rng = np.random.default_rng(0)
    prefix = tuple(rng.integers(3, V, size=20).tolist())
    suffixes = [tuple(rng.integers(3, V, size=int(n)).tolist()) for n in rng.integers(3, 40, 13)]
    cands = (5, 7)
    want = np.stack(
        [
            np.asarray(
                ref(
                    None,
                    params,
                    np.array([prefix + s]),
                    np.array([len(prefix + s)]),
                    np.array(cands),
                )[1]
            )[0]
            for s in suffixes
        ]
    )
    for shared in (True, False):
        sc = ModelScorer(None, params, mesh, rules, batch_size=8, max_len=128, shared_prefix=shared)
        np.testing.assert_allclose(sc.score(prefix, suffixes, cands), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the mesh's batch divisor"):
        ModelScorer(None, params, mesh, rules, batch_size=6)


def test_bootstrap_from_an_unfinished_stage_names_the_binding(tmp_path):
    from rlaif_jax.toy import labeler_bootstrap as bootstrap

    with pytest.raises(ValueError, match="bootstrap_labeler.init_from"):
        bootstrap.run_stage(workdir=str(tmp_path), model_preset="tiny", init_from="sft")
    assert not (tmp_path / "labeler").exists()  # nothing written before the check

"""Labeling throughput: pairs/s with the shared prefix encoded once per batch vs naive
full-prompt scoring, on the same random-weight model and the same prompts.

`benchmark_labeling(...) -> dict` is what `rlaif-jax bench` (bench.py) can call. The
two paths see identical token sequences (`tokens.tokenize_prompt`), so their
log-probs must agree; the benchmark checks that too (`max_abs_logprob_diff`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from rlaif_jax.labeling import render
from rlaif_jax.labeling.labeler import Labeler, LabelerSettings


def _toy_pairs(n: int, rng: np.random.Generator, words: int) -> list[dict[str, Any]]:
    vocab_words = ["cat", "dog", "house", "tree", "river", "sun", "moon", "car", "road", "bird"]

    def text(k):
        return " ".join(rng.choice(vocab_words, size=k))

    return [
        {"id": f"b{i}", "context": text(words), "response1": text(8), "response2": text(8)}
        for i in range(n)
    ]


def _vocab(tmpdir: str, texts: list[str]):
    from rlaif_jax.data import vocab as V

    vocab = V.sentencepiece_vocabulary(V.train_sentencepiece(texts, f"{tmpdir}/bench_sp", 512))
    vocab.vocab_size  # noqa: B018  (seqio loads the model lazily: load it before tmpdir goes)
    return vocab


def benchmark_labeling(
    preset: str = "tiny",
    num_pairs: int = 64,
    batch_size: int = 16,
    variant: render.PromptVariant | None = None,
    context_words: int = 12,
    repeats: int = 2,
    seed: int = 0,
    mesh: Any = None,
    rules: Any = None,
    **config_overrides: Any,
) -> dict[str, float]:
    """Times labeling `num_pairs` pairs (both orders) with and without the shared prefix.

    variant: default Detailed 2-shot summarization, whose preamble + exemplars are most
    of each prompt (the case the shared prefix targets). Returns pairs_per_s_shared,
    pairs_per_s_naive, speedup (shared / naive), prefix_tokens, mean_suffix_tokens,
    max_abs_prob_diff (between the two ways' P(order) values), num_pairs, batch_size.
    Timings exclude compilation (one warm-up pass each).
    """
    import tempfile

    variant = variant or render.PromptVariant("summarize", "detailed", num_shots=2)
    rng = np.random.default_rng(seed)
    pairs = _toy_pairs(num_pairs, rng, context_words)
    with tempfile.TemporaryDirectory() as tmp:
        texts = [
            render.render_preference(variant, p["context"], p["response1"], p["response2"]).text
            for p in pairs[:32]
        ]
        vocab = _vocab(tmp, texts)
    model = _random_model(preset, vocab, seed, mesh, rules, config_overrides)
    settings = LabelerSettings(pairs_per_call=batch_size // 2, max_len=4096)
    results, lps = {}, {}
    for name, shared in (("shared", True), ("naive", False)):
        results[f"pairs_per_s_{name}"], lps[name] = _time_labeling(
            model, vocab, variant, settings, pairs, batch_size, shared, repeats
        )
    prefix_tokens, suffix_tokens = _prompt_tokens(variant, vocab, pairs)
    results.update(
        speedup=results["pairs_per_s_shared"] / results["pairs_per_s_naive"],
        prefix_tokens=float(prefix_tokens),
        mean_suffix_tokens=float(suffix_tokens),
        max_abs_prob_diff=float(np.max(np.abs(lps["shared"] - lps["naive"]))),
        num_pairs=float(num_pairs),
        batch_size=float(batch_size),
    )
    return results


def _random_model(preset, vocab, seed, mesh, rules, config_overrides):
    """(config, params, mesh, rules): a randomly initialised `preset` LM covering `vocab`,
    on the local devices data-parallel unless `mesh` / `rules` are given."""
    import jax

    from rlaif_jax.models import config as model_config
    from rlaif_jax.sharding import mesh as mesh_lib
    from rlaif_jax.sharding import model_params
    from rlaif_jax.sharding import rules as rules_lib

    config = model_config.get_config(
        preset, vocab_size=max(512, vocab.vocab_size), **config_overrides
    )
    mesh = mesh or mesh_lib.make_mesh(data=-1, fsdp=1, tensor=1, devices=jax.local_devices())
    rules = rules or rules_lib.get_rules("dp")
    out = model_params.init_params(config, jax.random.PRNGKey(seed), mesh, rules, head="lm")
    params = out[0] if isinstance(out, tuple) else out
    return config, params, mesh, rules


def _time_labeling(model, vocab, variant, settings, pairs, batch_size, shared, repeats):
    """(pairs/s of the best of `repeats` passes after a warm-up, P(order) [N, 2])."""
    from rlaif_jax.labeling.scoring import ModelScorer

    config, params, mesh, rules = model
    scorer = ModelScorer(
        config, params, mesh, rules, batch_size=batch_size, max_len=4096, shared_prefix=shared
    )
    lab = Labeler(scorer, vocab, variant, settings)
    lab.label(pairs)  # compile every length bucket
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        recs = lab.label(pairs)
        best = min(best, time.perf_counter() - t0)
    return len(pairs) / best, np.array([[r["p_order1"], r["p_order2"]] for r in recs])


def _prompt_tokens(variant, vocab, pairs) -> tuple[int, float]:
    """(tokens of the shared prefix, mean tokens of a pair's suffix)."""
    pre = render.render_preference(variant, "", "", "")
    suffixes = [
        render.render_preference(variant, p["context"], p["response1"], p["response2"]).suffix
        for p in pairs
    ]
    return len(vocab.encode(pre.prefix)), float(np.mean([len(vocab.encode(t)) for t in suffixes]))

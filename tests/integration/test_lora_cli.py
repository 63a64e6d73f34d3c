"""LoRA RL as a user runs it: `rlaif-jax rl` with gin/method/lora.gin on a tiny random
Llama-layout Hugging Face policy (its own tokenizer.json) and real-format TL;DR files
(d-RLAIF reward: the same checkpoint as labeler), then `rlaif-jax export`.

Checks: every binding of lora.gin is used; the checkpoint's training state holds the
adapters, the value head and their optimizer moments only (nothing of the base); the
exported Hugging Face checkpoint holds base + (alpha/r)·a·b in every adapted kernel and
the base elsewhere, and transformers computes the LoRA model's logits from it."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from rlaif_jax.models import lora
from tests.fixtures import real_world
from tests.integration.test_real_path import run_cli

RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from rlaif_jax.data.formats import format_tldr_context

    root = str(tmp_path_factory.mktemp("lora_world"))
    paths, texts = {}, []
    for split, n in (("train", 16), ("validation", 4), ("test", 4)):
        path = paths[f"TLDR_{split.upper()}"] = os.path.join(root, "tldr", f"{split}.jsonl")
        for r in real_world.write_tldr(path, n, seed=len(paths)):
            texts += [format_tldr_context(r["subreddit"], r["title"], r["post"]), r["summary"]]
    paths["COMPARISONS"] = os.path.join(root, "comparisons.jsonl")
    real_world.write_comparisons(paths["COMPARISONS"], 2, seed=0)
    policy = paths["POLICY"] = os.path.join(root, "policy_llama")
    real_world.make_hf_tokenizer(policy, "llama", texts, include_prompts=False)
    real_world.make_hf_checkpoint(policy, "llama", policy, seed=0)
    return paths


def test_lora_rl_through_the_cli_exports_the_merged_policy(world, tmp_path):
    workdir = tmp_path / "run"
    args = [
        "rl",
        "--gin_file=tasks/summarize.gin",
        "--gin_file=runs/rl.gin",
        "--gin_file=method/d_rlaif.gin",
        "--gin_file=method/lora.gin",
        *(f"--gin.{m}='{world[m]}'" for m in ("TLDR_TRAIN", "TLDR_VALIDATION", "TLDR_TEST")),
        f"--gin.COMPARISONS='{world['COMPARISONS']}'",
        f"--gin.rl.policy_dir='{world['POLICY']}'",
        f"--gin.labeler_from_checkpoint.model_dir='{world['POLICY']}'",
        "--gin.labeler_from_checkpoint.batch_size=16",
        "--gin.labeler_from_checkpoint.max_len=384",
        "--gin.RLSettings.batch_size=8",
        "--gin.RLSettings.num_epochs=1",
        "--gin.RLSettings.max_steps=2",
        "--gin.RLSettings.checkpoint_every=1",
        "--gin.RLSettings.learning_rate=0.02",
        "--gin.RLSettings.max_context=64",
        "--gin.RLSettings.max_response=8",
        f"--gin.LoRAConfig.rank={RANK}",
        f"--gin.LoRAConfig.alpha={ALPHA}",
        f"--workdir={workdir}",
    ]
    out = run_cli(args, tmp_path / "rl.json")
    assert out["rc"] == 0
    # lora.gin's bindings all reached the stage (runs/rl.gin's RM batch size is the one
    # binding a d-RLAIF run leaves unused).
    unused = out["unused_bindings"]
    assert [b for b in unused if not b.endswith(".reward_model_from_checkpoint.batch_size")] == []
    rl_dir = workdir / "rl_d_rlaif"
    assert (rl_dir / "COMPLETE").is_file()
    rows = [json.loads(line) for line in (rl_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]

    out = run_cli(
        ["export", "--gin.export.models=[('lora', 'rl_d_rlaif')]", f"--workdir={workdir}"],
        tmp_path / "export.json",
    )
    assert out["rc"] == 0 and out["unused_bindings"] == []
    state = _training_state(rl_dir / "ckpt")
    adapters = state["params"]["policy"]
    _check_state_is_adapters_only(state)
    base, exported = _import(world["POLICY"]), _import(str(workdir / "export" / "lora"))
    _check_merged_kernels(base, exported, adapters)
    _check_logits(world["POLICY"], str(workdir / "export" / "lora"), base, adapters)


def _training_state(ckpt_dir):
    import orbax.checkpoint as ocp

    step = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    assert step == 2
    return ocp.StandardCheckpointer().restore(str(ckpt_dir / str(step) / "state"))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _check_state_is_adapters_only(state):
    params = state["params"]
    assert set(params) == {"policy", "value"}
    assert set(params["value"]) == {"adapters", "score_head"}
    for ad in (params["policy"], params["value"]["adapters"]):
        names = {(p, t) for mods in ad.values() for p, projs in mods.items() for t in projs}
        assert names == {(lora.TARGETS[t][0], t) for t in lora.ALL_TARGETS}
    trainable = sum(x.size for x in _leaves(params))
    moments = [x for x in _leaves(state["opt_state"]) if x.ndim > 0]
    assert sum(x.size for x in moments) == 2 * trainable  # Adam's m and v, nothing else


def _import(directory):
    from rlaif_jax import model_artifact
    from rlaif_jax.sharding.mesh import make_mesh
    from rlaif_jax.sharding.rules import get_rules

    art = model_artifact.open_model(directory)
    mesh = make_mesh(devices=jax.devices()[:1])
    params, _ = model_artifact.load_params(art, mesh, get_rules("dp"), "lm")
    return jax.device_get(params)


def _check_merged_kernels(base, exported, adapters):
    scale = ALPHA / RANK
    adapted = set()
    for layer, mods in adapters.items():
        for parent, projs in mods.items():
            for name, ab in projs.items():
                w = np.asarray(base[layer][parent][name]["kernel"], np.float64)
                a, b = np.asarray(ab["a"], np.float64), np.asarray(ab["b"], np.float64)
                assert np.abs(b).max() > 0  # RL moved the adapters off b = 0
                ab_full = (a.reshape(-1, RANK) @ b.reshape(RANK, -1)).reshape(w.shape)
                got = exported[layer][parent][name]["kernel"]
                np.testing.assert_allclose(got, w + scale * ab_full, rtol=1e-5, atol=1e-6)
                adapted.add((layer, parent, name))
    for path, leaf in jax.tree_util.tree_leaves_with_path(base):
        key = tuple(p.key for p in path)
        if key[:3] not in adapted:
            got = exported
            for k in key:
                got = got[k]
            np.testing.assert_array_equal(got, leaf)


def _check_logits(policy_dir, export_dir, base, adapters):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    from rlaif_jax import model_artifact
    from rlaif_jax.models.transformer import Transformer

    art = model_artifact.open_model(policy_dir)
    config = art.config.replace(dtype="float32")
    ids = np.asarray([art.vocab.encode("SUBREDDIT: r/relationships TITLE: my roommate")[:12]])
    cfg = lora.LoRAConfig(rank=RANK, alpha=ALPHA)
    ours, _ = Transformer(config).apply(lora.variables(base, adapters, cfg), ids)
    hf = transformers.AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32)
    with torch.no_grad():
        theirs = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=1e-4)
    plain, _ = Transformer(config).apply({"params": base}, ids)
    assert np.abs(np.asarray(plain) - theirs).max() > 1e-3  # the export is not the base

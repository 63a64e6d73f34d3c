"""The paper on real models, as a user runs it: `rlaif-jax pipeline` through the CLI with
each paper experiment (gin/experiments/paper/*.gin) + gin/test/tiny_real.gin, on two tiny
random Hugging Face checkpoints of different families (a Llama-layout policy and a
Gemma-layout labeler, each with its own trained tokenizer.json: different vocabularies,
special ids and chat templates) and real-format TL;DR / comparisons / HH-RLHF files.

Each run: every stage completes; report/metrics.json has the AI-judge win rates (and the
harmless rates on harmless) and no toy-oracle metric; no toy-world module was imported;
every gin binding of the composition was used by some stage; the exported RLAIF policy
loads in transformers with logits equal to ours."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from rlaif_jax.evaluation import report
from tests.fixtures import real_world
from tests.integration.local_processes import REPO

WORKER = os.path.join(REPO, "tests", "integration", "cli_worker.py")
TASK_MACROS = {
    "summarize": ("TLDR_TRAIN", "TLDR_VALIDATION", "TLDR_TEST", "COMPARISONS"),
    "helpful": ("HH_HELPFUL_TRAIN", "HH_HELPFUL_TEST"),
    "harmless": ("HH_HARMLESS_TRAIN", "HH_HARMLESS_TEST"),
}
STEPS = (
    "sft",
    "labels",
    "labels_same_size",
    "rm_ai",
    "rm_ai_same_size",
    "rm_human",
    "rl_rlaif",
    "rl_rlhf",
    "rl_same_size",
    "rl_d_rlaif",
    "rl_self_improve",
    "combined_pairs",
    "labels_combined",
    "rm_combined",
    "rl_combined",
    "report",
    "export",
)
COMPARISONS = (
    ("rlaif", "sft"),
    ("rlhf", "sft"),
    ("rlaif", "rlhf"),
    ("same_size", "sft"),
    ("d_rlaif", "sft"),
    ("d_rlaif", "same_size"),
    ("self_improve", "sft"),
    ("combined", "sft"),
    ("combined", "rlhf"),
)
POLICIES = ("sft", "rlaif", "rlhf", "same_size", "d_rlaif", "self_improve", "combined")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return real_world.write_real_world(str(tmp_path_factory.mktemp("real_world")))


def compile_cache_env(cache_dir) -> dict[str, str]:
    """Environment for JAX's persistent compilation cache in `cache_dir`: a pipeline's
    stages (and runs) that compile the same programs (every RL arm's sampler and update on
    one model, every RM's step) compile them once (an RL stage's CPU time halves)."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """One compilation cache for the runs of a test module (per xdist worker)."""
    return compile_cache_env(tmp_path_factory.mktemp("jax_compile_cache"))


def run_cli(args, out_json, timeout=1500, env_extra=None):
    env = {**os.environ, "PYTHONPATH": REPO, **(env_extra or {})}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, WORKER, str(out_json), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    with open(out_json) as f:
        return json.load(f)


def paper_args(task, world, workdir):
    args = [
        "pipeline",
        f"--gin_file=experiments/paper/{task}.gin",
        "--gin_file=test/tiny_real.gin",
        f"--gin.POLICY_HF_DIR='{world['POLICY_HF_DIR']}'",
        f"--gin.LABELER_HF_DIR='{world['LABELER_HF_DIR']}'",
    ]
    args += [f"--gin.{m}='{world[m]}'" for m in TASK_MACROS[task]]
    return args + [f"--workdir={workdir}"]


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASK_MACROS))
def test_paper_experiment_through_the_cli(task, world, tmp_path, compile_cache):
    workdir = tmp_path / "run"
    out = run_cli(paper_args(task, world, workdir), tmp_path / "out.json", env_extra=compile_cache)
    assert out["rc"] == 0
    assert out["toy_modules"] == [], "the real path imported the toy world"
    assert out["unused_bindings"] == [], f"gin bindings no stage used: {out['unused_bindings']}"
    for step in STEPS:
        assert (workdir / step / "COMPLETE").is_file(), step
    metrics = json.loads((workdir / "report" / "metrics.json").read_text())
    assert metrics["task"] == task
    for key in report.REQUIRED_KEYS:
        assert key in metrics, key
    for a, b in COMPARISONS:
        value = metrics[f"win_rate_{a}_vs_{b}_ai_judge"]
        assert 0.0 <= value <= 1.0, (a, b, value)
    for key in report.HUMAN_JUDGE_KEYS:
        assert key not in metrics  # real data has no oracle "human"
    assert not any("oracle" in json.dumps(row) for row in metrics["policies"].values())
    assert metrics["num_eval_prompts"] == 8
    for kind in ("ai", "human", "ai_same_size", "combined"):
        assert 0.0 <= metrics[f"rm_pairwise_accuracy_{kind}"] <= 1.0
    _check_combined_arm(workdir)
    assert 0.0 <= metrics["labeler_alignment"] <= 1.0
    if task == "harmless":
        for name in POLICIES:
            assert 0.0 <= metrics[f"harmless_rate_{name}"] <= 1.0
            assert not math.isnan(metrics[f"length_controlled_harmless_rate_{name}"])
    else:
        assert not any(k.startswith("harmless_rate_") for k in metrics)
        assert metrics["harmless_rates"] == {}
    # Every stage read the policy's layout from its artifact: the RL policy and the RMs
    # carry the SFT layout the policy was trained with.
    sft = json.loads((workdir / "sft" / "model.json").read_text())
    assert sft["layout"]["prompt_suffix"] == ("\nTL;DR:" if task == "summarize" else "")
    assert sft["layout"]["add_bos"] is True  # the Llama-3-style tokenizer expects BOS
    for d in ("rl_rlaif", "rm_ai", "rm_human"):
        assert json.loads((workdir / d / "model.json").read_text())["layout"] == sft["layout"]
    assert len(sft["tokenizer"]["eos_ids"]) > 1  # every EOS of the checkpoint stops sampling
    if task == "summarize":
        _check_export_matches_transformers(workdir)
        _check_contradicting_layout_is_refused(world, workdir, tmp_path)


def _check_combined_arm(workdir):
    """RLHF + RLAIF (App. K): one RLHF and one SFT response per new pair, in both orders;
    the large labeler labeled them all (no second alignment run); the RM trained on every
    human pair plus as many of them as there are (tiny_real: 16 contexts)."""
    rows = [json.loads(x) for x in (workdir / "combined_pairs" / "train.jsonl").open()]
    assert 0 < len(rows) <= 16
    assert {(r["policy1"], r["policy2"]) for r in rows} <= {("rl_rlhf", "sft"), ("sft", "rl_rlhf")}
    labels = json.loads((workdir / "labels_combined" / "manifest.json").read_text())
    assert sum(sh["num_records"] for sh in labels["shards"]) == len(rows)
    assert not (workdir / "labels_combined" / "alignment").exists()
    rm = json.loads((workdir / "rm_combined" / "COMPLETE").read_text())["metrics"]
    human = rm["num_human_pairs"]
    assert rm["num_ai_pairs"] == min(human, len(rows)) and human > 0
    assert rm["num_train_pairs"] == human + rm["num_ai_pairs"]


def _check_contradicting_layout_is_refused(world, workdir, tmp_path):
    """A gin value that contradicts the policy's artifact stops the stage with a message
    naming both values (exit 2), before anything is loaded or written."""
    args = paper_args("summarize", world, workdir)[1:-1]  # the experiment's files and macros
    args = ["rl", *args, "--scope=rl_rlaif", "--gin.RLSettings.max_response=64"]
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("XLA_FLAGS", None)
    before = (workdir / "rl_rlaif" / "COMPLETE").read_text()
    proc = subprocess.run(
        [sys.executable, WORKER, str(tmp_path / "refused.json"), *args, f"--workdir={workdir}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "RLSettings.max_response = 64 contradicts" in proc.stderr, proc.stderr[-3000:]
    assert "layout.max_response = 16" in proc.stderr
    assert (workdir / "rl_rlaif" / "COMPLETE").read_text() == before


def _check_export_matches_transformers(workdir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import jax

    from rlaif_jax import model_artifact
    from rlaif_jax.models import model as model_lib
    from rlaif_jax.sharding import mesh as mesh_lib
    from rlaif_jax.sharding import rules as rules_lib

    art = model_artifact.open_model(str(workdir / "rl_rlaif"))
    mesh = mesh_lib.make_mesh(devices=jax.devices()[:1])
    params, _ = model_artifact.load_params(art, mesh, rules_lib.get_rules("dp"), "lm")
    ids = np.asarray([art.vocab.encode("SUBREDDIT: r/relationships TITLE: my roommate")[:12]])
    ours, _ = model_lib.apply(art.config.replace(dtype="float32"), params, ids)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(workdir / "export" / "rlaif"), dtype=torch.float32
    )
    with torch.no_grad():
        theirs = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=1e-4)
    tok = transformers.AutoTokenizer.from_pretrained(str(workdir / "export" / "rlaif"))
    assert tok.encode("my roommate", add_special_tokens=False) == art.vocab.encode("my roommate")

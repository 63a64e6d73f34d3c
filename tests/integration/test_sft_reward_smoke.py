"""`rlaif-jax sft` and `rlaif-jax reward` from gin/test/*.gin, sharded (2, 2, 2) fsdp_tp on
8 fake devices: one-step smoke runs on the toy world. Also the synthetic pair task that
tests/integration/test_reward_accuracy.py trains RMs on."""

import json
import os

import gin
import numpy as np
import pytest

from rlaif_jax import cli
from rlaif_jax.data import tasks

GOOD = ("great", "lovely", "superb", "calm", "kind")
BAD = ("awful", "broken", "nasty", "rude", "dull")
NEUTRAL = ("the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "home", "it", "was")


def _phrase(rng, mood):
    words = list(rng.choice(NEUTRAL, size=3))
    words.insert(int(rng.integers(0, 4)), str(rng.choice(mood)))
    return " ".join(words)


def _pairs(split, n):
    """Pairs where the response with a GOOD word is preferred, shown first half the time."""
    rng = np.random.default_rng({"train": 0, "validation": 1}[split])
    out = []
    for i in range(n):
        good, bad = _phrase(rng, GOOD), _phrase(rng, BAD)
        first = bool(rng.integers(0, 2))
        out.append(
            {
                "id": f"syn-{split}-{i}",
                "context": " ".join(rng.choice(NEUTRAL, size=6)),
                "response1": good if first else bad,
                "response2": bad if first else good,
                "label": 1.0 if first else 0.0,
                "confidence": 1,
            }
        )
    return out


@gin.configurable
def synthetic_pair_sources():
    """Sources for a task a 1-layer RM learns in a few dozen steps (role -> split -> source)."""

    def src(role, split, fn):
        return tasks.RecordSource(f"synthetic/{role}/{split}", role, fn)

    sft = [
        {"id": p["id"], "context": p["context"], "response": p["response1"]}
        for p in _pairs("train", 64)
    ]
    out = {r: {} for r in tasks.ROLE_FEATURES}
    out["sft"]["train"] = src("sft", "train", lambda: sft)
    out["human_prefs"]["train"] = src("human_prefs", "train", lambda: _pairs("train", 512))
    out["human_prefs"]["validation"] = src(
        "human_prefs", "validation", lambda: _pairs("validation", 64)
    )
    return out


def _write_ai_labels(label_dir, pairs):
    """A finished label shard in the label stage's format: soft labels p = 0.8 / 0.2."""
    os.makedirs(label_dir)
    with open(os.path.join(label_dir, "shard-00000.jsonl"), "w") as f:
        for p in pairs:
            soft = 0.8 if p["label"] == 1.0 else 0.2
            rec = {**p, "label": soft, "p_order1": soft, "p_order2": soft}
            rec.update(human_label=p["label"], rationale="")
            f.write(json.dumps(rec) + "\n")
    with open(os.path.join(label_dir, "manifest.json"), "w") as f:
        json.dump({"shards": ["shard-00000.jsonl"]}, f)


def _run(stage, gin_file, workdir, *extra, scope=None):
    gin.clear_config()  # one process runs several stages, as the pipeline does
    args = [stage, "--gin_file", gin_file, f"--gin.WORKDIR='{workdir}'", *extra]
    if scope:
        args += ["--scope", scope]
    assert cli.main(args) == 0


def _complete(path):
    with open(path / "COMPLETE") as f:
        return json.load(f)["metrics"]


def test_sft_then_reward_one_step_on_the_toy_world(tmp_path):
    _run("sft", "test/sft_smoke.gin", tmp_path)
    m = _complete(tmp_path / "sft")
    assert m["num_steps"] == 1 and np.isfinite(m["loss"]) and m["target_tokens"] > 0
    assert (tmp_path / "sft" / "ckpt" / "1").is_dir()
    rows = (tmp_path / "logs" / "sft" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1]
    assert os.listdir(tmp_path / "logs" / "sft" / "tb")

    _run("reward", "test/reward_smoke.gin", tmp_path, scope="rm_human")
    m = _complete(tmp_path / "rm_human")
    assert m["num_steps"] == 1 and m["num_eval_pairs"] == 16
    assert 0.0 <= m["pairwise_accuracy"] <= 1.0 and np.isfinite(m["loss"])
    assert (tmp_path / "logs" / "rm_human" / "metrics.jsonl").is_file()

    # RLAIF without labels: a message naming the label directory.
    gin.clear_config()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "labels")):
        cli.main(
            [
                "reward",
                "--gin_file",
                "test/reward_smoke.gin",
                f"--gin.WORKDIR='{tmp_path}'",
                "--scope",
                "rm_ai",
            ]
        )

"""The HF labeler gives the same soft labels however it is sharded.

- In one process: the labeler of `scoring.labeler_from_checkpoint` with
  gin/sharding/fsdp.gin (params split over the 8 fake devices) and with the default 'dp'
  layout (params replicated, batch over 8 devices) labels the same TL;DR pairs as a
  labeler on ONE device.
- Across processes: `rlaif-jax label` in 2 jax.distributed processes (gloo, 4 devices
  each; each process labels its own shards with a labeler fsdp-sharded over its own
  devices) writes the same records as the same run in 1 process of 8 devices: no pair
  lost or duplicated, label / p_order1 / p_order2 equal.

The labeler is the tiny random Gemma-layout checkpoint of `tests/fixtures/real_world.py`
(its own tokenizer and chat template), read through the HF importer.
"""

from __future__ import annotations

import ast
import os

import gin
import jax
import numpy as np
import pytest

from rlaif_jax import configurables, gin_utils, model_artifact
from rlaif_jax.data import formats
from rlaif_jax.labeling import render
from rlaif_jax.labeling.labeler import Labeler, LabelerSettings
from rlaif_jax.labeling.scoring import ModelScorer, labeler_from_checkpoint
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from tests.fixtures import real_world
from tests.integration.local_processes import REPO, run_local_processes

WORKER = os.path.join(REPO, "tests", "integration", "label_worker.py")
NUM_PAIRS = 16
BATCH = 8  # prompts per scorer call: a multiple of the 8 (or 4) batch shards
SETTINGS = LabelerSettings(pairs_per_call=4, max_len=512)
VARIANT = render.PromptVariant("summarize", "base")
TASK_MACROS = ("TLDR_TRAIN", "TLDR_VALIDATION", "TLDR_TEST", "COMPARISONS")
FIELDS = ("label", "p_order1", "p_order2")
# Compute in float32 (the checkpoint's default is bfloat16, where a different reduction
# order across shards moves a soft label by ~1e-4): equal up to float32 rounding.
OVERRIDES = {"dtype": "float32"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return real_world.write_real_world(str(tmp_path_factory.mktemp("real_world")))


def _gin(world: dict, sharding: str | None) -> None:
    """Parses the label stage's gin (+ a sharding file) for the real-world labeler."""
    files = ["runs/label.gin", "tasks/summarize.gin"]
    files += [f"sharding/{sharding}.gin"] if sharding else []
    bindings = [f"{m} = '{world[m]}'" for m in TASK_MACROS]
    bindings += [
        f"labeler_from_checkpoint.model_dir = '{world['LABELER_HF_DIR']}'",
        f"labeler_from_checkpoint.batch_size = {BATCH}",
        f"labeler_from_checkpoint.model_overrides = {OVERRIDES!r}",
    ]
    gin.clear_config()
    gin_utils.parse_gin(files, bindings)


def _pairs(world: dict, workdir: str) -> list[dict]:
    _gin(world, None)
    data = configurables.build_policy_pairs().apply(configurables.build_data(), workdir)
    rows = list(data.source("unlabeled", "train"))[:NUM_PAIRS]
    gin.clear_config()
    assert len(rows) == NUM_PAIRS
    return rows


def _embedding(params) -> jax.Array:
    """The largest parameter (the token embedding, [V, D])."""
    return max(jax.tree.leaves(params), key=lambda a: a.size)


def _num_distinct_shards(param: jax.Array) -> int:
    return len({str(s.index) for s in param.addressable_shards})


def _soft_labels(labeler: Labeler, pairs: list[dict]) -> dict[str, np.ndarray]:
    recs = labeler.label(pairs, seed=0)
    assert [r["id"] for r in recs] == [str(p["id"]) for p in pairs]
    return {k: np.array([r[k] for r in recs], np.float64) for k in FIELDS}


def _one_device_labeler(world: dict) -> Labeler:
    """The reference: the same checkpoint on a single device (no sharding at all)."""
    from rlaif_jax.data.vocab import stop_ids

    art = model_artifact.open_model(world["LABELER_HF_DIR"])
    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.local_devices()[:1])
    rules = rules_lib.get_rules("dp")
    config = art.config_with(OVERRIDES, "test")
    params, _ = model_artifact.load_params(art, mesh, rules, "lm", config)
    scorer = ModelScorer(
        config,
        params,
        mesh,
        rules,
        batch_size=BATCH,
        max_len=SETTINGS.max_len,
        pad_id=art.vocab.pad_id,
        eos_id=stop_ids(art.vocab),
    )
    return Labeler(scorer, art.vocab, VARIANT, SETTINGS)


def test_labeler_fsdp_equals_unsharded(world, tmp_path):
    assert jax.local_device_count() == 8
    pairs = _pairs(world, str(tmp_path))
    want = _soft_labels(_one_device_labeler(world), pairs)
    # A random tiny labeler still has to prefer something: labels are not all 0.5.
    assert np.ptp(want["p_order1"]) > 1e-4, want

    for sharding, splits in (("fsdp", 8), (None, 1)):  # None: the default 'dp' layout
        _gin(world, sharding)
        mesh, rules = configurables.build_mesh(), configurables.build_rules()
        scorer, vocab = labeler_from_checkpoint(
            str(tmp_path), mesh, rules, max_len=SETTINGS.max_len
        )
        emb = _embedding(scorer.params)
        assert scorer.mesh.devices.size == 8
        assert len(emb.sharding.device_set) == 8
        assert _num_distinct_shards(emb) == splits, (sharding, emb.sharding)
        got = _soft_labels(Labeler(scorer, vocab, VARIANT, SETTINGS), pairs)
        for k in FIELDS:
            np.testing.assert_allclose(got[k], want[k], atol=1e-5, err_msg=f"{sharding}: {k}")
        gin.clear_config()


def _label_run(world: dict, nproc: int, workdir: str) -> list[str]:
    args = [
        workdir,
        "--gin_file=runs/label.gin",
        "--gin_file=tasks/summarize.gin",
        "--gin_file=sharding/fsdp.gin",
        *(f"--gin.{m}='{world[m]}'" for m in TASK_MACROS),
        f"--gin.labeler_from_checkpoint.model_dir='{world['LABELER_HF_DIR']}'",
        f"--gin.labeler_from_checkpoint.batch_size={BATCH}",
        f"--gin.labeler_from_checkpoint.model_overrides={OVERRIDES!r}",
        f"--gin.label.max_pairs={NUM_PAIRS}",
        "--gin.label.shard_size=4",
        f"--gin.LabelerSettings.pairs_per_call={SETTINGS.pairs_per_call}",
        f"--gin.LabelerSettings.max_len={SETTINGS.max_len}",
    ]
    return run_local_processes(WORKER, nproc, args, timeout=150)


def _shards_written(log: str, nproc: int) -> dict[str, list[int]]:
    """{label dir basename: shard indices} from a worker's `process_count=...` line."""
    line = next(x for x in log.splitlines() if x.startswith("process_count="))
    assert line.startswith(f"process_count={nproc} local_devices={8 // nproc} "), line
    out: dict[str, list[int]] = {}
    for item in ast.literal_eval(line.split("shards=", 1)[1]):
        name, k = item.rsplit(":", 1)
        out.setdefault(name, []).append(int(k))
    return out


def _records(label_dir: str) -> dict[str, dict]:
    recs = list(formats.read_ai_preferences(label_dir))
    ids = [r["id"] for r in recs]
    assert len(set(ids)) == len(ids), f"{label_dir}: a pair was labeled twice"
    return {r["id"]: r for r in recs}


@pytest.mark.multiprocess
def test_two_process_label_run_equals_one_process(world, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    _label_run(world, 1, one)
    logs = _label_run(world, 2, two)
    done = [_shards_written(log, 2) for log in logs]
    # Shard k of the 4 unlabeled shards is labeled by process k % 2, and only there.
    assert [sorted(d["labels"]) for d in done] == [[0, 2], [1, 3]], done
    for sub in ("labels", os.path.join("labels", "alignment")):
        want = _records(os.path.join(one, sub))
        got = _records(os.path.join(two, sub))
        # All 16 unlabeled pairs; the alignment subset of the comparisons is smaller.
        assert len(want) == NUM_PAIRS if sub == "labels" else 0 < len(want) <= NUM_PAIRS, sub
        assert sorted(got) == sorted(want), f"{sub}: pair ids differ"
        for pid, w in want.items():
            for k in FIELDS:
                np.testing.assert_allclose(got[pid][k], w[k], atol=1e-5, err_msg=f"{sub} {pid} {k}")
    for workdir in (one, two):
        assert os.path.isfile(os.path.join(workdir, "labels", "COMPLETE"))
        assert os.path.isfile(os.path.join(workdir, "labels", "metrics.json"))

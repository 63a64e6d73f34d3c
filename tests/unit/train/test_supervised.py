"""train/supervised.py: one supervised run of the shared loop from objects (mesh, rules,
optimizer, batch source): steps from epochs, exact resume, the LM -> scalar start, and
errors that name the setting."""

from __future__ import annotations

import functools
import json
import os

import jax
import numpy as np
import optax
import pytest

from rlaif_jax.data import batching
from rlaif_jax.models.config import get_config
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.rules import get_rules
from rlaif_jax.train import losses, supervised
from rlaif_jax.train.checkpoint import save_params

CONFIG = get_config("tiny", num_layers=1)


def _records(n=32, length=10):
    rng = np.random.default_rng(0)
    return [{"tokens": rng.integers(3, 200, size=length).tolist()} for _ in range(n)]


def _batch(records):
    tokens = np.asarray([r["tokens"] for r in records], np.int32)
    ones = np.ones_like(tokens)
    return {"tokens": tokens, "attention_mask": ones, "loss_mask": ones}


def _train(tmp_path, settings, name="run", **kw):
    mesh, rules = mesh_lib.make_mesh(2, 4, 1), get_rules("fsdp")
    return supervised.train_supervised(
        stage="unit",
        workdir=str(tmp_path),
        stage_dir=str(tmp_path / name),
        config=kw.pop("config", CONFIG),
        head=kw.pop("head", "lm"),
        batches=batching.EpochSource.over(_records(), settings.batch_size, settings.seed, _batch),
        loss_fn=kw.pop("loss_fn", functools.partial(losses.lm_loss, CONFIG)),
        settings=settings,
        mesh=mesh,
        rules=rules,
        tx=optax.adam(1e-2),
        **kw,
    )


def test_num_steps_from_epochs_or_steps():
    s = supervised.TrainSettings(batch_size=8, num_epochs=1.5)
    assert supervised.num_steps_for(s, 32) == 6
    assert supervised.num_steps_for(supervised.TrainSettings(num_steps=3), 10**6) == 3


def test_rerun_resumes_instead_of_retraining(tmp_path):
    settings = supervised.TrainSettings(batch_size=8, num_steps=3, save_every=1, log_every=1)
    params, metrics = _train(tmp_path, settings)
    assert metrics["num_steps"] == 3 and np.isfinite(metrics["loss"])
    again, metrics2 = _train(tmp_path, settings)  # finds step 3 and trains nothing
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert metrics2["loss"] == metrics["loss"]
    with open(tmp_path / "logs" / "run" / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3]


def test_scalar_model_starts_from_an_lm_checkpoint_trunk(tmp_path):
    mesh, rules = mesh_lib.make_mesh(2, 4, 1), get_rules("fsdp")
    lm, _ = model_params.init_params(CONFIG, jax.random.PRNGKey(7), mesh, rules, "lm")
    save_params(str(tmp_path / "lm_ckpt"), lm)
    settings = supervised.TrainSettings(batch_size=8, num_steps=1)

    def zero_loss(params, batch, rng):  # no update: the start is what comes back
        return 0.0 * jax.tree.leaves(params)[0].sum(), {}

    params, _ = _train(
        tmp_path,
        settings,
        name="rm",
        head="scalar",
        loss_fn=zero_loss,
        init_from=str(tmp_path / "lm_ckpt"),
    )
    assert "score_head" in params and "unembed" not in params
    trunk = {k: v for k, v in jax.device_get(lm).items() if k != "unembed"}
    for key, tree in trunk.items():
        for x, y in zip(jax.tree.leaves(tree), jax.tree.leaves(params[key])):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=0)


def test_batch_size_not_divisible_names_the_setting(tmp_path):
    settings = supervised.TrainSettings(batch_size=6, num_steps=1)  # 8 batch shards
    with pytest.raises(ValueError, match="TrainSettings.batch_size"):
        _train(tmp_path, settings)
    assert not os.path.exists(tmp_path / "run" / "ckpt")

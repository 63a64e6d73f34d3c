"""Orbax checkpoints: restore straight into other shardings, keep K, params-only init of
an RM from an LM checkpoint, and clear errors for missing, empty or corrupt directories."""

import os

import jax
import numpy as np
import optax
import pytest

from rlaif_jax.models.config import get_config
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.rules import get_rules
from rlaif_jax.train import checkpoint, supervised
from rlaif_jax.train import state as train_state

CONFIG = get_config("tiny", num_layers=1)


def _state(mesh, rules, seed=0):
    params, shardings = model_params.init_params(CONFIG, jax.random.PRNGKey(seed), mesh, rules)
    return train_state.create_sharded_state(params, shardings, optax.adam(1e-3), mesh, seed=seed)


def _damage(step_dir, item):
    """Overwrites every array file of `item` in a step directory."""
    hit = 0
    for root, _, files in os.walk(step_dir):
        for f in files:
            if item in root and not f.endswith(".json") and "METADATA" not in f:
                with open(os.path.join(root, f), "wb") as fh:
                    fh.write(b"garbage")
                hit += 1
    assert hit


def test_restore_into_other_shardings_and_keep(tmp_path):
    state, _ = _state(mesh_lib.make_mesh(4, 2, 1), get_rules("fsdp"))
    ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, state, {"step": step, "data": {"epoch": 0, "index": step}})
    ckpt.wait()  # saves are asynchronous: step 3 is committed only now
    assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [2, 3]
    assert ckpt.latest_step() == 3
    ckpt.close()
    # A different mesh and layout: arrays are read straight into the target shardings.
    target, target_shardings = _state(mesh_lib.make_mesh(2, 2, 2), get_rules("fsdp_tp"), 1)
    restored, meta = checkpoint.Checkpointer(str(tmp_path)).restore(target)
    assert meta == {"step": 3, "data": {"epoch": 0, "index": 3}}
    for x, y, s in zip(
        jax.tree.leaves(state), jax.tree.leaves(restored), jax.tree.leaves(target_shardings)
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert y.sharding.is_equivalent_to(s, y.ndim)


def test_rm_initialised_from_lm_checkpoint(tmp_path):
    mesh, rules = mesh_lib.make_mesh(2, 2, 2), get_rules("fsdp_tp")
    lm, _ = model_params.init_params(CONFIG, jax.random.PRNGKey(7), mesh, rules)
    checkpoint.save_params(str(tmp_path / "sft"), lm)
    rm, shardings = supervised.init_model_params(
        CONFIG, "scalar", mesh, rules, seed=0, init_from=str(tmp_path / "sft"), lm_source=True
    )
    assert "unembed" not in rm and "score_head" in rm
    for k in lm:
        if k != "unembed":
            for x, y in zip(jax.tree.leaves(lm[k]), jax.tree.leaves(rm[k]), strict=True):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, s in zip(jax.tree.leaves(rm), jax.tree.leaves(shardings), strict=True):
        assert x.sharding.is_equivalent_to(s, x.ndim)


def test_missing_empty_and_corrupt_directories_are_named(tmp_path):
    mesh, rules = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1]), get_rules("dp")
    structs, _ = model_params.abstract_params(CONFIG, mesh, rules)
    with pytest.raises(checkpoint.CheckpointError, match="No checkpoint directory .*nope"):
        checkpoint.restore_params(str(tmp_path / "nope"), structs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(checkpoint.CheckpointError, match=f"{empty} holds no finished"):
        checkpoint.restore_params(str(empty), structs)
    with pytest.raises(
        checkpoint.CheckpointError, match=f"No checkpoint to resume from in {empty}"
    ):
        checkpoint.Checkpointer(str(empty)).restore(structs)

    params, _ = model_params.init_params(CONFIG, jax.random.PRNGKey(0), mesh, rules)
    ckpt = tmp_path / "ckpt"
    checkpoint.save_params(str(ckpt), params)
    _damage(ckpt / "0", "params")
    with pytest.raises(checkpoint.CheckpointError, match=f"step 0 from {ckpt}"):
        checkpoint.restore_params(str(ckpt), structs)

    # A stage resuming from a damaged latest step: the message names the step directory.
    state, _ = _state(mesh, rules)
    run = tmp_path / "run"
    c = checkpoint.Checkpointer(str(run))
    c.save(4, state, {"step": 4})
    c.close()
    _damage(run / "4", "state")
    with pytest.raises(checkpoint.CheckpointError, match=f"step 4 from {run}.*delete that step"):
        checkpoint.Checkpointer(str(run)).restore(state)

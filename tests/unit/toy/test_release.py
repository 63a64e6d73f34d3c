"""Labeler releases: a finished bootstrap exported once and installed by later runs."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from rlaif_jax import artifacts
from rlaif_jax.data import vocab as vocab_lib
from rlaif_jax.models.config import get_config
from rlaif_jax.sharding import model_params
from rlaif_jax.toy import labeler_bootstrap as bootstrap
from rlaif_jax.toy import presets as _presets  # noqa: F401  (registers 'toy_policy')
from rlaif_jax.toy import release
from rlaif_jax.train.checkpoint import restore_params, save_params


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture
def bootstrapped(tmp_path):
    """A finished `bootstrap_labeler` stage of the tiny preset: (stage_dir, params)."""
    stage = tmp_path / "run" / "labeler"
    mesh, rules = release._local_mesh()
    params, _ = model_params.init_params(get_config("tiny"), jax.random.key(3), mesh, rules, "lm")
    save_params(str(stage / "ckpt"), params)
    vocab_lib.train_sentencepiece(
        ["the cat sat on the mat", "Preferred Summary=1"] * 20, str(stage / "spm"), 64
    )
    artifacts.write_complete(str(stage), {"loss": 0.61, "num_steps": 40}, wall_seconds=12.5)
    return str(stage), params


def test_export_then_install_reproduces_the_labeler_exactly(bootstrapped, tmp_path):
    stage, params = bootstrapped
    recipe = tmp_path / "recipe.gin"
    recipe.write_text("bootstrap_labeler/TrainSettings.num_epochs = 3\n")
    out = str(tmp_path / "rel")
    manifest = release.export_release(stage, out, "tiny", recipe=str(recipe), notes="unit")
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "spm.model"}
    assert manifest["recipe"].startswith("bootstrap_labeler/") and manifest["num_params"] == sum(
        x.size for x in _leaves(params)
    )
    assert json.load(open(os.path.join(out, release.MANIFEST)))["bootstrap"]["wall_seconds"] == 12.5

    # The stage entry point installs it where the label stage looks (WORKDIR/labeler).
    workdir = tmp_path / "fresh"
    metrics = bootstrap.run_stage(workdir=str(workdir), model_preset="tiny", release=out)
    assert metrics["loss"] == 0.61 and metrics["release_bootstrap_seconds"] == 12.5
    assert artifacts.is_complete(str(workdir / "labeler"))
    spm = (tmp_path / "run" / "labeler" / "spm.model").read_bytes()
    assert (workdir / "labeler" / "spm.model").read_bytes() == spm
    # ... as a model directory the label stage reads like any labeler.
    from rlaif_jax import model_artifact

    art = model_artifact.open_model(str(workdir / "labeler"))
    assert art.config == get_config("tiny") and art.head == "lm"
    mesh, rules = release._local_mesh()
    structs, _ = model_params.abstract_params(get_config("tiny"), mesh, rules, "lm")
    restored = restore_params(str(workdir / "labeler" / "ckpt"), structs)
    for a, b in zip(_leaves(params), _leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_damaged_release_and_wrong_preset_are_refused_with_the_reason(bootstrapped, tmp_path):
    stage, _ = bootstrapped
    out = str(tmp_path / "rel")
    release.export_release(stage, out, "tiny")
    with pytest.raises(
        release.ReleaseError, match="toy_policy.*d_model: release 64 vs configured 128"
    ):
        release.install_release(out, str(tmp_path / "w" / "labeler"), "toy_policy")
    with open(os.path.join(out, "spm.model"), "ab") as f:
        f.write(b"!")
    with pytest.raises(release.ReleaseError, match="spm.model does not match its SHA-256"):
        release.install_release(out, str(tmp_path / "w" / "labeler"), "tiny")
    with pytest.raises(release.ReleaseError, match="bootstrap_labeler.release='no_such'"):
        release.resolve("no_such")


def test_the_shipped_toy_world_release_installs_through_the_cli(tmp_path):
    """The release gin/runs/toy_world.gin installs, through the CLI with gin locked as in a
    pipeline run: shipped with the package, intact (not a Git LFS pointer), and shaped
    like the toy world's labeler preset."""
    from rlaif_jax import cli

    assert "toy_world_v1" in release.available()
    manifest = release.read_manifest(release.resolve("toy_world_v1"))
    assert manifest["model_preset"] == "toy_policy" and manifest["recipe"]
    args = ["bootstrap_labeler", "--gin_file", "experiments/demo.gin", "--workdir", str(tmp_path)]
    assert cli.main(args) == 0
    stage = tmp_path / "labeler"
    assert (
        artifacts.read_complete(str(stage))["metrics"]["release_num_params"]
        == (manifest["num_params"])
    )
    assert (stage / "spm.model").read_bytes() == open(
        os.path.join(release.resolve("toy_world_v1"), "spm.model"), "rb"
    ).read()
    mesh, rules = release._local_mesh()
    structs, _ = model_params.abstract_params(get_config("toy_policy"), mesh, rules, "lm")
    params = restore_params(str(stage / "ckpt"), structs)
    assert sum(x.size for x in _leaves(params)) == manifest["num_params"]

"""toy/labeler_bootstrap.py: bootstrapping from an unfinished stage names the binding."""

from __future__ import annotations

import pytest


def test_bootstrap_from_an_unfinished_stage_names_the_binding(tmp_path):
    from rlaif_jax.toy import labeler_bootstrap as bootstrap

    with pytest.raises(ValueError, match="bootstrap_labeler.init_from"):
        bootstrap.run_stage(workdir=str(tmp_path), model_preset="tiny", init_from="sft")
    assert not (tmp_path / "labeler").exists()  # nothing written before the check

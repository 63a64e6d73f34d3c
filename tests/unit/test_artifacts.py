"""Stage artifacts: the atomic writer every stage uses and the completion marker."""

import json
import os

import pytest

from rlaif_jax import artifacts


def test_atomic_write_creates_parents_replaces_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "a" / "b" / "metrics.json"
    artifacts.atomic_write(str(path), "first")
    artifacts.atomic_write(str(path), "ünïcode second")
    assert path.read_text(encoding="utf-8") == "ünïcode second"
    assert os.listdir(path.parent) == ["metrics.json"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    artifacts.atomic_write(str(path), "old")

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        artifacts.atomic_write(str(path), "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_completion_marker_round_trip_and_missing_marker_names_the_path(tmp_path):
    stage = tmp_path / "rm_ai"
    assert not artifacts.is_complete(str(stage))
    with pytest.raises(FileNotFoundError, match="rm_ai"):
        artifacts.read_complete(str(stage))
    artifacts.write_complete(str(stage), {"accuracy": 0.7}, wall_seconds=3.5)
    assert artifacts.is_complete(str(stage))
    payload = artifacts.read_complete(str(stage))
    assert payload["metrics"] == {"accuracy": 0.7} and payload["wall_seconds"] == 3.5
    assert json.loads((stage / "COMPLETE").read_text())["finished_at"].endswith("Z")

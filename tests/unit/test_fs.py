"""The I/O layer (rlaif_jax.fs): local semantics unchanged, URIs through etils.epath —
here an offline gs:// (tests/fake_gcs.py) — and atomic writes on both."""

import os

import pytest

from rlaif_jax import fs
from tests.fake_gcs import fake_gcs  # noqa: F401  (fixture)


def test_uri_detection_and_abspath(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fs.is_uri("gs://b/x") and fs.is_uri("s3://b/x") and not fs.is_uri("/a/b")
    assert not fs.is_uri("rel/dir") and not fs.is_uri("C://x")
    # The bug of issue 23: a URI made "absolute" became ./gs:/bucket/...
    assert fs.abspath("gs://my-bucket/demo/sft/") == "gs://my-bucket/demo/sft"
    assert fs.abspath("rel") == str(tmp_path / "rel")
    assert fs.join("gs://b", "x", "y.json") == "gs://b/x/y.json"
    assert fs.abspath("file:///tmp/x") == "/tmp/x"


def test_local_atomic_write_copy_append_and_listing(tmp_path):
    path = tmp_path / "a" / "b.txt"
    fs.atomic_write(str(path), "ünï")
    fs.atomic_write(str(path), b"bytes")
    assert path.read_bytes() == b"bytes" and os.listdir(path.parent) == ["b.txt"]
    fs.atomic_copy(str(path), str(tmp_path / "c" / "d.txt"))
    assert fs.read_text(str(tmp_path / "c" / "d.txt")) == "bytes"
    fs.append_text(str(tmp_path / "log.jsonl"), "1\n")
    fs.append_text(str(tmp_path / "log.jsonl"), "2\n")
    assert fs.read_text(str(tmp_path / "log.jsonl")) == "1\n2\n"
    assert fs.listdir(str(tmp_path)) == ["a", "c", "log.jsonl"]
    assert fs.read_range(str(path), 1, 3) == b"yte" and fs.getsize(str(path)) == 5
    with pytest.raises(OSError, match="short read"):
        fs.read_range(str(path), 3, 10)


def test_failed_local_streaming_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.json"
    fs.atomic_write(str(path), "old")
    with pytest.raises(RuntimeError, match="boom"):
        with fs.atomic_writer(str(path)) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["m.json"]


def test_gs_round_trip_without_local_files(fake_gcs, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    root = "gs://bkt/work"
    fs.atomic_write(f"{root}/sft/COMPLETE", '{"ok": 1}')
    fs.atomic_copy(f"{root}/sft/COMPLETE", f"{root}/copy/COMPLETE")
    fs.makedirs(f"{root}/empty")
    assert {"/bkt/work/sft/COMPLETE", "/bkt/work/copy/COMPLETE"} <= set(fake_gcs)
    assert fs.isfile(f"{root}/sft/COMPLETE") and fs.isdir(f"{root}/sft")
    assert not fs.exists(f"{root}/nope") and fs.isdir(f"{root}/empty")
    assert fs.read_text(f"{root}/copy/COMPLETE") == '{"ok": 1}'
    assert fs.listdir(root) == ["copy", "empty", "sft"]
    assert fs.read_range(f"{root}/sft/COMPLETE", 2, 2) == b"ok"
    assert fs.getsize(f"{root}/sft/COMPLETE") == 9
    with fs.open_file(f"{root}/sft/COMPLETE", "rb") as f:
        f.seek(7)
        assert f.read() == b"1}"
    assert not fs.can_append(root)
    with pytest.raises(ValueError, match="cannot append"):
        fs.append_text(f"{root}/x.jsonl", "1")
    with pytest.raises(ValueError, match="reading only"):
        fs.open_file(f"{root}/x", "w")
    fs.remove(f"{root}/copy/COMPLETE")
    fs.rmtree(f"{root}/sft")
    assert not fs.exists(f"{root}/sft/COMPLETE") and not fs.exists(f"{root}/copy/COMPLETE")
    assert os.listdir(tmp_path) == []  # nothing local, no ./gs:/ folder


def test_failed_gs_write_leaves_no_partial_object(fake_gcs):  # noqa: F811
    fs.atomic_write("gs://bkt/m.json", "old")
    with pytest.raises(RuntimeError):
        with fs.atomic_writer("gs://bkt/new.json") as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert not fs.exists("gs://bkt/new.json") and fs.read_text("gs://bkt/m.json") == "old"

"""Streaming safetensors reader/writer: bit-exact round trips, sharded placement, errors."""

from __future__ import annotations

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rlaif_jax.models.importers import safetensors_io as sio
from rlaif_jax.sharding.mesh import make_mesh


def _tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "a.weight": rng.standard_normal((8, 12)).astype(np.float32),
        "b.bias": rng.standard_normal((12,)).astype(ml_dtypes.bfloat16),
        "c.half": rng.standard_normal((4, 2, 6)).astype(np.float16),
        "d.ids": rng.integers(-5, 5, (3,)).astype(np.int64),
        "e.scalar": np.array(3.5, np.float32),
    }


def _write(directory, tensors, max_shard_bytes=None, config=None):
    out = [sio.OutTensor(n, v.shape, v.dtype, lambda v=v: v) for n, v in tensors.items()]
    files = sio.write_checkpoint(str(directory), out, max_shard_bytes=max_shard_bytes)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config or {"model_type": "test"}, f)
    return files


@pytest.mark.parametrize("max_shard_bytes", [None, 300])
def test_round_trip_bit_exact(tmp_path, max_shard_bytes):
    tensors = _tensors(np.random.default_rng(0))
    files = _write(tmp_path, tensors, max_shard_bytes)
    assert (len(files) > 1) == (max_shard_bytes is not None)
    with sio.Checkpoint(str(tmp_path)) as ckpt:
        assert ckpt.names == sorted(tensors)
        assert ckpt.config == {"model_type": "test"}
        for name, value in tensors.items():
            got = ckpt.tensor(name)
            assert got.dtype == value.dtype and got.shape == value.shape
            assert got.tobytes() == value.tobytes(), name


def test_reads_and_is_read_by_the_safetensors_library(tmp_path):
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(1)
    tensors = {k: v for k, v in _tensors(rng).items() if v.dtype != ml_dtypes.bfloat16}
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text("{}")
    with sio.Checkpoint(str(tmp_path)) as ckpt:
        for name, value in tensors.items():
            np.testing.assert_array_equal(ckpt.tensor(name), value)
    ours = tmp_path / "ours"
    _write(ours, tensors)
    loaded = load_file(str(ours / "model.safetensors"))
    for name, value in tensors.items():
        np.testing.assert_array_equal(loaded[name], value)


def test_bf16_readable_by_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    value = np.random.default_rng(2).standard_normal((5, 3)).astype(ml_dtypes.bfloat16)
    _write(tmp_path, {"w": value})
    loaded = load_file(str(tmp_path / "model.safetensors"))["w"]
    assert loaded.dtype == torch.bfloat16
    assert loaded.view(torch.int16).numpy().tobytes() == value.tobytes()


class _Recorder:
    """A lazy source that records which slices were read."""

    def __init__(self, array):
        self.array, self.shape, self.reads = array, array.shape, []

    def __getitem__(self, index):
        self.reads.append(index)
        return self.array[index]


def test_to_device_reads_only_each_devices_slice(tmp_path):
    value = np.arange(8 * 4 * 6, dtype=np.float32).reshape(8, 24)
    _write(tmp_path, {"w": value})
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    with sio.Checkpoint(str(tmp_path)) as ckpt:
        # A transposed, reshaped memmap view, as the importers build them.
        view = ckpt.tensor("w").reshape(8, 4, 6).transpose(1, 0, 2)
        src = _Recorder(view)
        sharding = NamedSharding(mesh, P("fsdp", None, "tensor"))
        arr = sio.to_device(src, sharding, ml_dtypes.bfloat16)
    assert arr.dtype == ml_dtypes.bfloat16 and arr.sharding == sharding
    np.testing.assert_array_equal(np.asarray(arr), view.astype(ml_dtypes.bfloat16))
    # Each read is one device's quarter (fsdp x tensor), never the whole tensor.
    assert src.reads and all(src.array[i].size == view.size // 4 for i in src.reads), src.reads
    for shard in arr.addressable_shards:
        np.testing.assert_array_equal(
            np.asarray(shard.data), view[shard.index].astype(ml_dtypes.bfloat16)
        )


def test_truncated_file_names_tensor_and_file(tmp_path):
    _write(tmp_path, _tensors(np.random.default_rng(3)))
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(
        sio.CheckpointError,
        match=r"truncated: tensor '.*'.*model\.safetensors|model\.safetensors: truncated: tensor",
    ):
        sio.Checkpoint(str(tmp_path))
    path.write_bytes(data[:5])
    with pytest.raises(sio.CheckpointError, match="truncated"):
        sio.Checkpoint(str(tmp_path))
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(sio.CheckpointError, match="header is not valid JSON"):
        sio.Checkpoint(str(tmp_path))


def test_inconsistent_header_names_tensor(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}
    blob = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(
        len(blob).to_bytes(8, "little") + blob + b"\0" * 16
    )
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        sio.CheckpointError, match=r"tensor 'w' \(F32\[2, 3\]\) should span 24 bytes"
    ):
        sio.Checkpoint(str(tmp_path))


def test_missing_files_and_index_mismatch(tmp_path):
    with pytest.raises(sio.CheckpointError, match="checkpoint directory not found"):
        sio.Checkpoint(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(sio.CheckpointError, match="neither model.safetensors nor"):
        sio.Checkpoint(str(tmp_path))
    _write(tmp_path, _tensors(np.random.default_rng(4)), max_shard_bytes=300)
    index_path = tmp_path / sio.INDEX_FILE
    index = json.loads(index_path.read_text())
    shard = index["weight_map"]["a.weight"]
    os.remove(tmp_path / shard)
    with pytest.raises(sio.CheckpointError, match=f"safetensors file not found: .*{shard}"):
        sio.Checkpoint(str(tmp_path))
    _write(tmp_path, _tensors(np.random.default_rng(4)), max_shard_bytes=300)
    index = json.loads(index_path.read_text())
    index["weight_map"]["ghost.weight"] = shard
    index_path.write_text(json.dumps(index))
    with pytest.raises(sio.CheckpointError, match="absent from their shards: 'ghost.weight'"):
        sio.Checkpoint(str(tmp_path))
    os.remove(tmp_path / "config.json")
    with pytest.raises(sio.CheckpointError, match="config.json not found"):
        sio.Checkpoint(str(tmp_path))


def test_unknown_tensor_lookup(tmp_path):
    _write(tmp_path, {"w": np.zeros(3, np.float32)})
    with sio.Checkpoint(str(tmp_path)) as ckpt:
        with pytest.raises(sio.CheckpointError, match="tensor 'v' not in the checkpoint"):
            ckpt.tensor("v")


def test_host_gather_of_sharded_array():
    mesh = make_mesh(data=8)
    x = jax.device_put(np.arange(16.0).reshape(8, 2), NamedSharding(mesh, P("data")))
    np.testing.assert_array_equal(sio.to_host(x), np.arange(16.0).reshape(8, 2))

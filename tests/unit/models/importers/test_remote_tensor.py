"""Hugging Face checkpoints on an object store: `RemoteTensor` views equal numpy's, a
slice fetches only its byte range (split along the outer axis when sparse), and a whole
model imports from gs:// (tests/fake_gcs.py) exactly as from a local directory."""

import collections
import math
import threading

import jax
import numpy as np
import pytest

from rlaif_jax import fs
from rlaif_jax.models.config import get_config
from rlaif_jax.models.importers import remote_tensor
from rlaif_jax.models.importers import safetensors_io as sio
from rlaif_jax.models.importers.export import export_hf
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding.rules import get_rules
from tests.fake_gcs import fake_gcs  # noqa: F401  (fixture)


class _BytesReader:
    """A RangeReader over bytes in memory that records every request."""

    def __init__(self, data: bytes):
        self.data, self.requests = data, []
        self._lock, self._cache_bytes = threading.Lock(), 1 << 30
        self._blocks = collections.OrderedDict()

    def read(self, offset, length):
        self.requests.append((offset, length))
        return self.data[offset : offset + length]

    def read_block(self, offset, length):
        return remote_tensor.RangeReader.read_block(self, offset, length)


def _remote(array: np.ndarray, lead: int = 24):
    """(RemoteTensor of `array` stored after `lead` header bytes, its reader)."""
    reader = _BytesReader(b"\0" * lead + array.tobytes())
    info = sio.TensorInfo("t", "gs://b/x", array.dtype, array.shape, lead, lead + array.nbytes)
    return remote_tensor.RemoteTensor(reader, info), reader


@pytest.mark.parametrize(
    "view,index",
    [
        (lambda t: t, (slice(1, 4), slice(None), slice(2, 5))),
        (lambda t: t, (2, slice(1, 3), -1)),
        (lambda t: t.reshape(6, 20), (slice(1, 4), slice(3, 17))),
        (lambda t: t.transpose(2, 0, 1), (slice(1, 3), slice(None), 2)),
        (lambda t: t.reshape(24, 5).transpose(1, 0), (slice(None), slice(5, 9))),
        (lambda t: t.reshape((2, 3, 4, 5)).transpose((3, 1, 0, 2)), (slice(0, 2),)),
        (lambda t: t, (slice(2, 2),)),
    ],
)
def test_views_and_slices_equal_numpy(view, index):
    a = np.arange(6 * 4 * 5, dtype=np.float32).reshape(6, 4, 5)
    t, reader = _remote(a)
    got = view(t)[index]
    np.testing.assert_array_equal(got, view(a)[index])
    assert view(t).shape == view(a).shape
    if got.size:  # one contiguous request no larger than the span of the selection
        assert len(reader.requests) == 1 and reader.requests[0][1] <= a.nbytes
    np.testing.assert_array_equal(np.asarray(view(t)), view(a))


def test_sparse_selection_is_split_and_column_shards_share_one_fetch():
    rows, cols = 8, (1 << 21) // 4  # 2 MiB rows: skipping them beats 3 more requests
    a = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    t, reader = _remote(a)
    np.testing.assert_array_equal(t[:4, 8:24], a[:4, 8:24])
    assert len(reader.requests) == 4 and all(n == 16 * 4 for _, n in reader.requests)
    reader.requests.clear()
    np.testing.assert_array_equal(t[2:5, :], a[2:5])  # dense: one request of its rows
    assert reader.requests == [(24 + 2 * cols * 4, 3 * cols * 4)]
    reader.requests.clear()
    # Column shards (each spanning most of the tensor): fetched once, then from memory.
    for j in range(4):
        cut = slice(j * cols // 4, (j + 1) * cols // 4)
        np.testing.assert_array_equal(t[:, cut], a[:, cut])
    assert reader.requests == [(24, a.nbytes)]
    with pytest.raises(NotImplementedError, match="reshape after transpose"):
        t.transpose(1, 0).reshape(-1)


def test_model_imports_from_gs_like_from_local(fake_gcs, tmp_path, monkeypatch):  # noqa: F811
    config = get_config("tiny", num_layers=1)
    mesh, rules = mesh_lib.make_mesh(2, 4, 1), get_rules("fsdp")
    params, _ = model_params.init_params(config, jax.random.PRNGKey(0), mesh, rules)
    remote, local = "gs://bkt/hf", str(tmp_path / "hf")
    files = export_hf(remote, params, config, "llama", max_shard_bytes=40_000)
    export_hf(local, params, config, "llama", max_shard_bytes=40_000)
    assert sio.INDEX_FILE in files and len(files) > 2
    assert sorted(fs.listdir(remote)) == sorted(fs.listdir(local))
    for name in files:
        assert fs.read_bytes(f"{remote}/{name}") == fs.read_bytes(f"{local}/{name}")

    requests = []
    real_read = remote_tensor.RangeReader.read

    def counting_read(self, offset, length):
        requests.append(length)
        return real_read(self, offset, length)

    monkeypatch.setattr(remote_tensor.RangeReader, "read", counting_read)
    got, got_config = model_params.import_hf(remote, mesh, rules)
    want, _ = model_params.import_hf(local, mesh, rules)
    assert got_config.d_model == config.d_model
    for x, y, p in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        np.testing.assert_array_equal(np.asarray(x), np.asarray(p))
        assert x.sharding.is_equivalent_to(y.sharding, x.ndim)
    # Read in device slices, never a file whole.
    largest_file = max(fs.getsize(f"{remote}/{n}") for n in files if n.endswith(".safetensors"))
    assert len(requests) > len(jax.tree.leaves(params)) and max(requests) < largest_file
    assert sum(requests) <= sum(math.prod(p.shape) * 4 for p in jax.tree.leaves(params)) * 1.01

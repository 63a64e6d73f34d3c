"""Lazy views of tensors in remote safetensors files, read in byte ranges.

A safetensors file on an object store (gs://...) cannot be memory-mapped, and copying a
multi-GB shard to local disk just to read one host's slices of it is what the loader
avoids locally too. `RemoteTensor` is the remote stand-in for the memmap view
`safetensors_io.Checkpoint.tensor` returns: the importers reshape and transpose it into
our layout, and `safetensors_io.to_device` indexes it per device, each index fetching
only the byte range its elements span (`RangeReader`: one open file, seek + read, through
`rlaif_jax.fs`).
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Sequence

import numpy as np

from rlaif_jax import fs


class RangeReader:
    """One open remote file, read in byte ranges (seek + read; thread-safe).

    `read_block` keeps recently read blocks (LRU, at most `cache_bytes`): the devices of
    one host ask for the same or overlapping bytes one after another (replicas; column
    shards, which `RemoteTensor` reads as the whole tensor), which locally the page cache
    serves; here each block is then fetched once per host instead of once per device."""

    def __init__(self, path: str, cache_bytes: int = 1 << 30):
        self.path = path
        self._file = fs.open_file(path, "rb")
        self._lock = threading.Lock()
        self._blocks: collections.OrderedDict[tuple[int, int], bytes] = collections.OrderedDict()
        self._cache_bytes = cache_bytes

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            self._file.seek(offset)
            data = self._file.read(length)
        if len(data) != length:
            raise OSError(f"{self.path}: short read ({len(data)} of {length} bytes at {offset})")
        return data

    def read_block(self, offset: int, length: int) -> bytes:
        """`read`, remembered: a later call for the same block is served from memory."""
        key = (offset, length)
        with self._lock:
            if key in self._blocks:
                self._blocks.move_to_end(key)
                return self._blocks[key]
        data = self.read(offset, length)
        if length <= self._cache_bytes:
            with self._lock:
                self._blocks[key] = data
                while sum(n for _, n in self._blocks) > self._cache_bytes:
                    self._blocks.popitem(last=False)
        return data

    def close(self) -> None:
        self._blocks.clear()
        self._file.close()


# One request costs about as long as transferring this many bytes (object-store latency
# ~10 ms at ~100 MB/s): a read is split into parts only when that saves more bytes than
# the extra requests cost.
_REQUEST_COST_BYTES = 1 << 20


class RemoteTensor:
    """A lazy view of a tensor in a remote safetensors file: `reshape` (before any
    `transpose`) and `transpose` change only the view; indexing with slices and ints
    fetches the bytes the selection spans (ranged reads) and returns a numpy array.

    The view is (shape, element strides) over the stored row-major tensor, as numpy's
    own views are, so `x.reshape(r).transpose(p)[index]` equals the same on the array."""

    def __init__(self, reader, info, shape=None, strides=None, transposed=False):
        """reader: a `RangeReader`; info: the tensor's `safetensors_io.TensorInfo` (dtype,
        stored shape, absolute byte range)."""
        self._reader, self._info = reader, info
        self.dtype = info.dtype
        self.shape = tuple(info.shape if shape is None else shape)
        self._strides = tuple(_row_major(self.shape) if strides is None else strides)
        self._transposed = transposed

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def reshape(self, *shape) -> RemoteTensor:
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        if self._transposed:
            raise NotImplementedError("RemoteTensor: reshape after transpose")
        if math.prod(shape) != math.prod(self.shape):
            raise ValueError(f"cannot reshape {self.shape} into {shape}")
        return RemoteTensor(self._reader, self._info, shape, _row_major(shape))

    def transpose(self, *axes) -> RemoteTensor:
        axes = tuple(axes[0]) if len(axes) == 1 and not isinstance(axes[0], int) else axes
        axes = axes or tuple(reversed(range(self.ndim)))
        shape = tuple(self.shape[a] for a in axes)
        strides = tuple(self._strides[a] for a in axes)
        return RemoteTensor(self._reader, self._info, shape, strides, transposed=True)

    def __array__(self, dtype=None, copy=None):
        out = self[(slice(None),) * self.ndim]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (self.ndim - len(index))
        starts, counts, keep = [], [], []
        for dim, (i, n) in enumerate(zip(index, self.shape)):
            if isinstance(i, slice):
                lo, hi, step = i.indices(n)
                if step != 1:
                    raise NotImplementedError("RemoteTensor: slices with a step")
                starts.append(lo)
                counts.append(max(0, hi - lo))
                keep.append(dim)
            else:
                i = int(i) + (n if int(i) < 0 else 0)
                if not 0 <= i < n:
                    raise IndexError(f"index {i} out of range for axis {dim} of {n}")
                starts.append(i)
                counts.append(1)
        out = self._read_box(starts, counts)
        return out.reshape([counts[d] for d in keep])

    def _read_box(self, starts: list[int], counts: list[int]) -> np.ndarray:
        """The elements starts[d] .. starts[d] + counts[d] - 1 along every axis d."""
        if 0 in counts:
            return np.zeros(counts, self.dtype)
        first = sum(s * st for s, st in zip(starts, self._strides))
        last = sum((s + c - 1) * st for s, c, st in zip(starts, counts, self._strides))
        itemsize = self.dtype.itemsize
        span = (last - first + 1) * itemsize
        # Split along the axis of the largest stride when the box's elements are sparse in
        # their span (e.g. a column block): k requests of one outer index each save the
        # bytes between them, worth it when that beats the cost of k - 1 more requests.
        outer = max(range(len(counts)), key=lambda d: self._strides[d] * (counts[d] > 1))
        k = counts[outer]
        part_span = span - (k - 1) * self._strides[outer] * itemsize
        total = self._info.end - self._info.begin
        if span * 2 > total:  # most of the tensor: fetch it whole, once per host
            whole = self._reader.read_block(self._info.begin, total)
            flat = np.frombuffer(whole, dtype=self.dtype)[first : last + 1]
            return _strided(flat, counts, self._strides)
        if k > 1 and span - k * part_span > (k - 1) * _REQUEST_COST_BYTES:
            parts = []
            for i in range(k):
                sub_starts, sub_counts = list(starts), list(counts)
                sub_starts[outer], sub_counts[outer] = starts[outer] + i, 1
                parts.append(self._read_box(sub_starts, sub_counts))
            return np.concatenate(parts, axis=outer)
        # Remembered too: the replicas of a slice on this host ask for the same bytes.
        data = self._reader.read_block(self._info.begin + first * itemsize, span)
        return _strided(np.frombuffer(data, dtype=self.dtype), counts, self._strides)


def _strided(flat: np.ndarray, counts: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """A copy of the box of `counts` elements with element `strides` from flat[0]."""
    view = np.lib.stride_tricks.as_strided(
        flat, shape=tuple(counts), strides=[st * flat.itemsize for st in strides], writeable=False
    )
    return np.array(view)


def _row_major(shape: Sequence[int]) -> tuple[int, ...]:
    """Element strides of a C-ordered array of `shape`."""
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))

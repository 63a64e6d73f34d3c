"""Streaming safetensors I/O for Hugging Face-layout checkpoint directories.

A checkpoint directory holds `config.json` and either `model.safetensors` or a sharded
`model.safetensors.index.json` plus its shard files. Reading never loads a whole file:
each file's header is parsed (format: 8-byte little-endian header length, a JSON header
of `{name: {dtype, shape, data_offsets}}`, then the raw bytes) and every tensor is a
read-only memory map view (local files) or a `RemoteTensor` (a gs://... directory,
through `rlaif_jax.fs`: indexing it fetches the bytes of that slice with ranged reads,
never the whole file). `to_device` builds a global `jax.Array` with
`jax.make_array_from_callback`, so each device receives (and each host reads) only its
own slice -- a 70B labeler never sits whole on one host or device.

The header is parsed here rather than with `safetensors.safe_open(framework='numpy')`
because numpy has no bfloat16 (safe_open refuses BF16 tensors) and because a parsed
header lets truncated files fail with the tensor's name. Writing is streaming too:
the header is computed from shapes and dtypes alone and tensors are produced one at a
time, so export holds at most one tensor on the host.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import ml_dtypes
import numpy as np

from rlaif_jax import fs
from rlaif_jax.models.importers.remote_tensor import RangeReader, RemoteTensor

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Largest header the reference implementation accepts (100 MB); anything larger means a
# corrupt or non-safetensors file.
_MAX_HEADER = 100_000_000

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not match the model."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and absolute byte range in the file."""

    name: str
    path: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def dtype_name(dtype: np.dtype | type) -> str:
    """The safetensors dtype tag ('F32', 'BF16', ...) of a numpy/ml_dtypes dtype."""
    dtype = np.dtype(dtype)
    if dtype not in _DTYPE_NAMES:
        raise CheckpointError(f"dtype {dtype} cannot be stored in safetensors")
    return _DTYPE_NAMES[dtype]


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parses and validates the header of one `.safetensors` file.

    Returns ({name: TensorInfo}, metadata). Raises CheckpointError naming the file (and
    the tensor) when the file is missing, truncated or its header is inconsistent.
    """
    if not fs.isfile(path):
        raise CheckpointError(f"safetensors file not found: {path}")
    size = fs.getsize(path)
    with fs.open_file(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated ({size} bytes), not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(
                f"{path}: header length {n} exceeds the file size {size} "
                "(truncated or not a safetensors file)"
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: header is not valid JSON ({e})") from e
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + n
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            lo, hi = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: tensor {name!r} has a bad header entry {entry}") from e
        expected = math.prod(shape) * dtype.itemsize
        if hi - lo != expected:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({entry['dtype']}{list(shape)}) should span "
                f"{expected} bytes but its offsets span {hi - lo}"
            )
        if data_start + hi > size:
            raise CheckpointError(
                f"{path}: truncated: tensor {name!r} needs bytes up to {data_start + hi} "
                f"but the file has {size}"
            )
        tensors[name] = TensorInfo(name, path, dtype, shape, data_start + lo, data_start + hi)
    return tensors, metadata


class Checkpoint:
    """A Hugging Face-layout checkpoint directory, read lazily one tensor at a time.

    `config` is the parsed config.json; `names` every tensor name; `tensor(name)` a
    read-only memory-mapped numpy view of a local file, or a `RemoteTensor` of a file on
    an object store (no bytes are read until it is indexed).
    """

    def __init__(self, directory: str):
        self.directory = directory
        if not fs.isdir(directory):
            raise CheckpointError(f"checkpoint directory not found: {directory}")
        cfg_path = os.path.join(directory, CONFIG_FILE)
        if not fs.isfile(cfg_path):
            raise CheckpointError(f"{cfg_path} not found (a Hugging Face checkpoint needs it)")
        try:
            self.config: dict = json.loads(fs.read_text(cfg_path))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from e
        self._infos = self._scan()
        self._maps: dict[str, np.memmap] = {}
        self._readers: dict[str, RangeReader] = {}

    def _scan(self) -> dict[str, TensorInfo]:
        index_path = os.path.join(self.directory, INDEX_FILE)
        single = os.path.join(self.directory, SINGLE_FILE)
        if fs.isfile(index_path):
            try:
                weight_map: dict[str, str] = json.loads(fs.read_text(index_path))["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index_path}: no valid 'weight_map' ({e})") from e
            files = sorted(set(weight_map.values()))
        elif fs.isfile(single):
            weight_map, files = {}, [SINGLE_FILE]
        else:
            raise CheckpointError(f"{self.directory}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
        infos: dict[str, TensorInfo] = {}
        for fname in files:
            tensors, _ = read_header(os.path.join(self.directory, fname))
            for name, info in tensors.items():
                if name in infos:
                    raise CheckpointError(
                        f"tensor {name!r} appears in both {infos[name].path} and {info.path}"
                    )
                infos[name] = info
        missing = {n: f for n, f in weight_map.items() if n not in infos}
        if missing:
            listing = ", ".join(f"{n!r} (in {f})" for n, f in sorted(missing.items()))
            raise CheckpointError(f"{index_path} lists tensors absent from their shards: {listing}")
        return infos

    @property
    def names(self) -> list[str]:
        return sorted(self._infos)

    def info(self, name: str) -> TensorInfo:
        if name not in self._infos:
            raise CheckpointError(f"{self.directory}: tensor {name!r} not in the checkpoint")
        return self._infos[name]

    def tensor(self, name: str) -> np.ndarray | RemoteTensor:
        """Tensor `name` with its stored dtype and shape, lazily: a read-only memory map
        view (local file) or a `RemoteTensor` (object store)."""
        info = self.info(name)
        if fs.is_uri(info.path):
            reader = self._readers.get(info.path)
            if reader is None:
                reader = self._readers[info.path] = RangeReader(info.path)
            return RemoteTensor(reader, info)
        mm = self._maps.get(info.path)
        if mm is None:
            mm = self._maps[info.path] = np.memmap(info.path, dtype=np.uint8, mode="r")
        flat = mm[info.begin : info.end].view(info.dtype)
        return flat.reshape(info.shape)

    def close(self) -> None:
        self._maps.clear()  # dropping the memmaps unmaps the files
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def to_device(
    source: np.ndarray | RemoteTensor, sharding: Any, dtype: np.dtype | type
) -> jax.Array:
    """A global array from a (lazy) host view; each device reads only its own slice.

    `source` may be a memmap or any numpy view of one (transposed, reshaped): indexing it
    reads only the bytes of that slice, and only for devices addressable by this process.
    `sharding` is the target's placement as handed in (a `ShapeDtypeStruct.sharding`);
    models/ never builds one (the mesh lives in `rlaif_jax.sharding`).
    """
    dtype = np.dtype(dtype)

    def slice_for(index: tuple[slice, ...]) -> np.ndarray:
        return np.ascontiguousarray(source[index]).astype(dtype, copy=False)

    return jax.make_array_from_callback(tuple(source.shape), sharding, slice_for)


def to_host(x: jax.Array | np.ndarray) -> np.ndarray:
    """A whole array on this host (all-gathers arrays spread over several processes)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


@dataclass(frozen=True)
class OutTensor:
    """One tensor to write: its name, shape, dtype and a function producing its values."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    produce: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def write_file(path: str, tensors: Sequence[OutTensor], metadata: dict[str, str]) -> None:
    """Writes one safetensors file, producing tensors one at a time; atomic
    (`fs.atomic_writer`: tmp + rename locally, a write-once object on a store)."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": dtype_name(t.dtype),
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the spec pads the header to 8-byte alignment
    with fs.atomic_writer(path) as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for t in tensors:
            value = np.asarray(t.produce())
            if value.shape != tuple(t.shape):
                raise CheckpointError(
                    f"tensor {t.name!r}: produced shape {value.shape}, declared {t.shape}"
                )
            f.write(np.ascontiguousarray(value.astype(t.dtype, copy=False)).tobytes())


def write_checkpoint(
    directory: str,
    tensors: Iterable[OutTensor],
    max_shard_bytes: int | None = None,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Writes tensors as `model.safetensors` or, past `max_shard_bytes`, HF-style shards.

    Shards are named `model-00001-of-0000N.safetensors` with a
    `model.safetensors.index.json` weight map. Returns the written file names.
    """
    tensors = list(tensors)
    metadata = {"format": "pt", **(metadata or {})}
    fs.makedirs(directory)
    groups: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if max_shard_bytes and groups[-1] and size + t.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.nbytes
    if len(groups) == 1:
        write_file(os.path.join(directory, SINGLE_FILE), groups[0], metadata)
        return [SINGLE_FILE]
    names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    weight_map = {}
    for fname, group in zip(names, groups):
        write_file(os.path.join(directory, fname), group, metadata)
        weight_map.update({t.name: fname for t in group})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}
    fs.atomic_write(
        os.path.join(directory, INDEX_FILE), json.dumps(index, indent=2, sort_keys=True)
    )
    return names + [INDEX_FILE]

"""The one I/O layer for user paths: a local path or a URI (gs://bucket/dir, s3://...).

Every path a user hands the package — WORKDIR and everything under it, data files,
model, tokenizer and Hugging Face checkpoint directories — is read and written through
these functions, so a work directory on Cloud Storage works like a local one (DESIGN
§1). A local path keeps plain `os` semantics (callers may still mmap it, see
`is_local`); a URI goes through `etils.epath`, the layer orbax itself uses (tf.io.gfile,
or fsspec with EPATH_USE_TF=false), so checkpoints and every other file of a run live
in one namespace. A URI is never made "absolute": `abspath('gs://b/x')` is 'gs://b/x'.

Atomic writes (`atomic_write`, `atomic_copy`): a reader sees the old file or the whole
new one, never a part.
  local  write then rename: a per-process temporary file beside the target, fsynced,
         then `os.replace` (atomic on POSIX file systems).
  URI    write-once final objects: object stores (GCS, S3) have no atomic rename (a
         "move" is copy + delete), but they publish an object only when its single
         upload completes, so writing the final name once is the atomic step. Shared
         files are written by host 0 only, so no two writers race on a name.
Appending (`append_text`) is for local files only: object stores cannot append, so a
caller that grows a file (the metrics JSONL) rewrites it whole at its flush points
(`can_append` tells which).

The bottom of the package (Base layer): imports nothing of rlaif_jax.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from typing import IO, Any

# scheme://rest, the scheme at least two characters (so 'C://x' stays a local path).
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")

PathLike = str | os.PathLike


def _str(path: PathLike) -> str:
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = path.decode()
    return path.removeprefix("file://")


def is_uri(path: PathLike) -> bool:
    """Whether `path` names a remote file system (gs://, s3://, ...), not a local path."""
    return _URI.match(_str(path)) is not None


def is_local(path: PathLike) -> bool:
    return not is_uri(path)


def abspath(path: PathLike) -> str:
    """A local path made absolute; a URI unchanged (it is absolute already)."""
    p = _str(path)
    return p.rstrip("/") if is_uri(p) else os.path.abspath(p)


def as_epath(path: PathLike):
    """The `etils.epath.Path` of `path` (what orbax takes)."""
    from etils import epath

    return epath.Path(abspath(path))


def join(*parts: PathLike) -> str:
    """os.path.join that keeps a URI's '//' (posix separators, which URIs use)."""
    return os.path.join(*(_str(p) for p in parts))


def exists(path: PathLike) -> bool:
    p = _str(path)
    return as_epath(p).exists() if is_uri(p) else os.path.exists(p)


def isfile(path: PathLike) -> bool:
    p = _str(path)
    return as_epath(p).is_file() if is_uri(p) else os.path.isfile(p)


def isdir(path: PathLike) -> bool:
    p = _str(path)
    return as_epath(p).is_dir() if is_uri(p) else os.path.isdir(p)


def makedirs(path: PathLike) -> None:
    """Creates `path` and its parents if missing (on an object store: a marker object,
    so an empty directory lists; files need none)."""
    p = _str(path)
    if is_uri(p):
        as_epath(p).mkdir(parents=True, exist_ok=True)
    elif p:
        os.makedirs(p, exist_ok=True)


def listdir(path: PathLike) -> list[str]:
    """Sorted names (not paths) of the entries of directory `path`."""
    p = _str(path)
    if is_uri(p):
        return sorted(c.name for c in as_epath(p).iterdir())
    return sorted(os.listdir(p))


def _delete(path: PathLike, missing_ok: bool, local, remote) -> None:
    p = _str(path)
    if not exists(p):
        if missing_ok:
            return
        raise FileNotFoundError(p)
    if is_uri(p):
        remote(as_epath(p))
    else:
        local(p)


def remove(path: PathLike, missing_ok: bool = True) -> None:
    """Deletes the file `path` (a missing one is fine unless missing_ok is False)."""
    _delete(path, missing_ok, os.remove, lambda p: p.unlink())


def rmtree(path: PathLike, missing_ok: bool = True) -> None:
    """Deletes the directory `path` and everything under it."""
    _delete(path, missing_ok, shutil.rmtree, lambda p: p.rmtree())


def getsize(path: PathLike) -> int:
    p = _str(path)
    return int(as_epath(p).stat().length) if is_uri(p) else os.path.getsize(p)


def open_file(path: PathLike, mode: str = "r") -> IO[Any]:
    """A file object for reading ('r', 'rb') or, local only, writing: text is UTF-8.

    Remote files are read through epath (tf.io.gfile / fsspec), which reads in ranges:
    `seek` + `read` fetch only the bytes asked for. Remote writes go through
    `atomic_write` (write-once objects), never a half-written open file.
    """
    p = _str(path)
    if is_uri(p):
        if mode not in ("r", "rb"):
            raise ValueError(f"{p}: remote files are opened for reading only (mode {mode!r}).")
        return as_epath(p).open(mode)
    if "b" in mode:
        return builtins.open(p, mode)
    return builtins.open(p, mode, encoding="utf-8")


def read_text(path: PathLike) -> str:
    with open_file(path, "r") as f:
        return f.read()


def read_bytes(path: PathLike) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def read_range(path: PathLike, offset: int, length: int) -> bytes:
    """`length` bytes of `path` from `offset` (one ranged read on an object store)."""
    with open_file(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise OSError(f"{_str(path)}: short read ({len(data)} of {length} bytes at {offset}).")
    return data


@contextlib.contextmanager
def atomic_writer(path: PathLike) -> Iterator[IO[bytes]]:
    """A binary file to stream `path`'s new content into; readers see the old file or
    the whole new one (module docstring). Locally: a temporary file, fsynced and renamed
    over `path` on success, removed on failure. Remotely: the final object, written once;
    on failure the partial object (which some backends publish on close) is deleted.
    Parent directories are created."""
    p = _str(path)
    if is_uri(p):
        target = as_epath(p)
        try:
            with target.open("wb") as f:
                yield f
        except BaseException:
            try:
                if target.exists():
                    target.unlink()
            except Exception:  # the write's own error is the one to report
                pass
            raise
        return
    os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
    tmp = f"{p}.tmp{os.getpid()}"
    try:
        with builtins.open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: PathLike, data: str | bytes) -> None:
    """Writes `data` (str: UTF-8) to `path` so that a reader sees the old file or the
    whole new one, never a part (module docstring: rename locally, write-once remotely).
    Parent directories are created."""
    with atomic_writer(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else bytes(data))


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    """Copies `src` to `dst` (either local or remote) so that a reader sees no
    half-written `dst`: a local copy is renamed into place, a remote one written once."""
    s, d = _str(src), _str(dst)
    if is_uri(s) or is_uri(d):
        atomic_write(d, read_bytes(s))
        return
    os.makedirs(os.path.dirname(d) or ".", exist_ok=True)
    tmp = f"{d}.tmp{os.getpid()}"
    try:
        shutil.copyfile(s, tmp)
        os.replace(tmp, d)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def can_append(path: PathLike) -> bool:
    """Whether `append_text` works on `path` (local files; object stores cannot append)."""
    return is_local(path)


def append_text(path: PathLike, text: str) -> None:
    """Appends `text` to a local file (created with its parents if missing)."""
    p = _str(path)
    if is_uri(p):
        raise ValueError(f"{p}: object stores cannot append; rewrite the file whole.")
    os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
    with builtins.open(p, "a", encoding="utf-8") as f:
        f.write(text)

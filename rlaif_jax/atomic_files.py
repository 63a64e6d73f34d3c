"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

The bottom of the package (imports nothing of rlaif_jax), so stages, their shared
support (`artifacts`), Data (copied tokenizer files) and Core (exported checkpoints)
all write through it.
"""

from __future__ import annotations

import os
import shutil


def atomic_write(path: str, text: str) -> None:
    """Writes `text` to `path` so that a reader sees the old file or the whole new one,
    never a part (a per-process temporary file, fsynced, then renamed over `path`)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_copy(src: str, dst: str) -> None:
    """Copies `src` to `dst` so that a reader sees no half-written `dst` (copy, then rename)."""
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    tmp = f"{dst}.tmp{os.getpid()}"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)

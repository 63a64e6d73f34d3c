"""Stage artifacts in a work directory: completion markers and their metrics.

Every stage writes `WORKDIR/<stage dir>/COMPLETE` (JSON: metrics, wall_seconds,
finished_at) atomically as its very last act, on host 0. The pipeline skips a stage
whose marker exists; a stage that dies before it leaves no marker and resumes from
its own checkpoints / shards on the next run. WORKDIR may be local or a URI
(gs://...): every file goes through `rlaif_jax.fs`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import jax

from rlaif_jax import fs

# Stages write their files through `artifacts.atomic_write` / `atomic_copy`, which are
# the I/O layer's (`fs`: rename locally, write-once objects on an object store).
from rlaif_jax.fs import atomic_copy, atomic_write  # noqa: F401  (for stages)

MARKER = "COMPLETE"


def json_safe(value: Any) -> Any:
    """A copy that strict JSON can hold: NaN/inf -> None, numpy scalars -> Python,
    tuples -> lists, mapping keys -> str (report files and stage records)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / jax scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def marker_path(stage_dir: str) -> str:
    return fs.join(stage_dir, MARKER)


def is_complete(stage_dir: str) -> bool:
    return fs.isfile(marker_path(stage_dir))


def write_complete(stage_dir: str, metrics: Mapping[str, Any], wall_seconds: float) -> None:
    """Atomically writes the completion marker (host 0 only)."""
    if jax.process_index() != 0:
        return
    payload = {
        "metrics": {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()},
        "wall_seconds": float(wall_seconds),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(marker_path(stage_dir), json.dumps(payload, indent=2, sort_keys=True))


def read_complete(stage_dir: str) -> dict[str, Any]:
    """The marker's payload; a clear error naming the path when the stage has not finished."""
    path = marker_path(stage_dir)
    if not fs.isfile(path):
        raise FileNotFoundError(
            f"Stage output {stage_dir} is not complete (no {MARKER} file): run that stage first."
        )
    return json.loads(fs.read_text(path))

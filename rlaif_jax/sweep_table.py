"""The sweep's results: metrics files read and flattened, one table as markdown, CSV, JSON.

Paths with a scheme (gs://) go through tf.io.gfile, imported only then.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class MetricsError(ValueError):
    """A metrics file that is not a JSON object, with its path and line."""


@dataclass
class RunResult:
    """One variant's run: status is ok | failed | skipped | no_metrics | dry_run."""

    variant: str
    workdir: str
    status: str
    returncode: int | None = None
    seconds: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def join(base: str, name: str) -> str:
    """Path join that keeps gs:// URLs intact."""
    return base.rstrip("/") + "/" + name


def open_path(path: str, mode: str = "r"):
    """Local files, or gs:// and other remote paths through tf.io.gfile."""
    if "://" in path:
        import tensorflow as tf

        return tf.io.gfile.GFile(path, mode)
    if "w" in mode:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return open(path, mode)


def exists(path: str) -> bool:
    if "://" in path:
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.isfile(path)


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects -> dotted keys; scalars (numbers, strings, bools, null) kept, lists dropped."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_metrics(v, key + "."))
        elif v is None or isinstance(v, bool | int | float | str):
            out[key] = v
    return out


def read_metrics(path: str) -> dict[str, Any]:
    with open_path(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise MetricsError(f"{path}:{e.lineno}: invalid JSON metrics: {e.msg}.") from e
    if not isinstance(data, Mapping):
        raise MetricsError(f"{path}: metrics must be a JSON object.")
    return flatten_metrics(data)


def build_table(
    results: Sequence[RunResult], keys: Sequence[str] = ()
) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (variant, status, returncode, run_seconds, then metric keys in first-seen
    order, filtered by the glob patterns `keys` if given) and one row per variant."""
    metric_cols: list[str] = []
    for r in results:
        for k in r.metrics:
            if k not in metric_cols and (not keys or any(fnmatch.fnmatch(k, p) for p in keys)):
                metric_cols.append(k)
    columns = ["variant", "status", "returncode", "run_seconds", *metric_cols]
    rows = []
    for r in results:
        row: dict[str, Any] = {
            "variant": r.variant,
            "status": r.status,
            "returncode": r.returncode,
            "run_seconds": None if r.seconds is None else round(r.seconds, 2),
        }
        row.update({k: r.metrics.get(k) for k in metric_cols})
        rows.append(row)
    return columns, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def write_table(
    columns: Sequence[str], rows: Sequence[Mapping[str, Any]], out_dir: str
) -> dict[str, str]:
    """Writes OUT_DIR/sweep.md, sweep.csv and sweep.json; returns {format: path}."""
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        [{c: ("" if row.get(c) is None else row.get(c)) for c in columns} for row in rows]
    )
    texts = {
        "md": "\n".join(md) + "\n",
        "csv": buf.getvalue(),
        "json": json.dumps({"columns": list(columns), "rows": list(rows)}, indent=2) + "\n",
    }
    paths = {}
    for fmt, text in texts.items():
        path = join(out_dir, f"sweep.{fmt}")
        with open_path(path, "w") as f:
            f.write(text)
        paths[fmt] = path
    return paths

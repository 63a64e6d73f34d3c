"""Reading rows of record files: the machinery every reader in `formats` shares.

A file is JSON lines (`.gz` too) or parquet; each row is handed to a reader's parse
function with its position ("line 3", "row 3"), `get_field` / `get_text` fetch and check
its fields, and `parse_rows` runs the parse over every row. Bad input raises
`RecordError` naming file, line (or parquet row) and field; with `skip_bad_records=True`
the record is skipped and counted in a `ReadStats`, which logs what was read. Paths may
be local or URIs (gs://...): files are opened through `rlaif_jax.fs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rlaif_jax import fs

# Reads are logged under the name of the module of the readers (`formats`).
logger = logging.getLogger("rlaif_jax.data.formats")

Record = dict[str, Any]


class RecordError(ValueError):
    """A malformed input record; the message names file, line (or row) and field."""

    def __init__(self, path: str, where: str, field: str, problem: str):
        self.path, self.where, self.field, self.problem = path, where, field, problem
        super().__init__(f"{path}, {where}, field {field!r}: {problem}")


@dataclasses.dataclass
class ReadStats:
    """Counts of one read: records yielded, records skipped, and the first few errors."""

    read: int = 0
    skipped: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    max_errors_kept: int = 20

    def skip(self, err: Exception) -> None:
        self.skipped += 1
        if len(self.errors) < self.max_errors_kept:
            self.errors.append(str(err))

    def log(self, what: str) -> None:
        if self.skipped:
            logger.warning(
                "%s: read %d records, skipped %d bad ones (first: %s)",
                what,
                self.read,
                self.skipped,
                self.errors[0],
            )
        else:
            logger.info("%s: read %d records", what, self.read)


@contextlib.contextmanager
def _open_text(path: str) -> Iterator[Any]:
    if path.endswith(".gz"):
        with fs.open_file(path, "rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            yield f
    else:
        with fs.open_file(path, "r") as f:
            yield f


def _json_lines(path: str) -> Iterator[tuple[str, Any]]:
    """(where, parsed object) for each non-blank line; bad JSON raises RecordError."""
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                yield where, RecordError(path, where, "<json>", f"not valid JSON ({e.msg})")


def _parquet_rows(path: str) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    row = 0
    with fs.open_file(path, "rb") as f:  # a seekable file: parquet reads only what it needs
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                yield f"row {row}", obj
                row += 1


def _rows(path: str) -> Iterator[tuple[str, Any]]:
    if not fs.exists(path):
        raise FileNotFoundError(f"Data file not found: {path}")
    return _parquet_rows(path) if path.endswith(".parquet") else _json_lines(path)


def get_field(obj: Any, dotted: str, path: str, where: str) -> Any:
    """obj['a']['b'] for 'a.b', with a RecordError naming the missing field."""
    cur = obj
    for part in dotted.split("."):
        if isinstance(cur, list | tuple) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        elif isinstance(cur, Mapping) and cur.get(part) is not None:
            cur = cur[part]
        else:
            raise RecordError(path, where, dotted, "missing")
    return cur


def get_text(obj: Any, dotted: str, path: str, where: str, allow_empty: bool = False) -> str:
    """The string at `dotted`, with a RecordError if it is not a string or is blank."""
    value = get_field(obj, dotted, path, where)
    if not isinstance(value, str):
        raise RecordError(path, where, dotted, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RecordError(path, where, dotted, "empty text")
    return value


def parse_rows(
    path: str,
    parse: Callable[[Any, str], Record | None],
    skip_bad_records: bool,
    stats: ReadStats | None,
) -> Iterator[Record]:
    """Runs `parse(obj, where)` over every row; None from parse means "filtered out"."""
    stats = stats if stats is not None else ReadStats()
    for where, obj in _rows(path):
        try:
            if isinstance(obj, RecordError):
                raise obj
            if not isinstance(obj, Mapping):
                raise RecordError(path, where, "<record>", "expected a JSON object")
            rec = parse(obj, where)
        except RecordError as e:
            if not skip_bad_records:
                raise
            stats.skip(e)
            continue
        if rec is not None:
            stats.read += 1
            yield rec
    stats.log(path)

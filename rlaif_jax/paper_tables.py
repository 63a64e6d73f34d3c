"""`rlaif-jax table`: one of the paper's tables as rows of runs, written beside the paper's numbers.

A table step runs each of its rows as a stage in its own directory
(WORKDIR/tables/NAME/ROW: resumable, a finished row is read, not rerun), then writes the
table laid out like the paper's, with the paper's own number in a column beside ours,
as a section of WORKDIR/report/report.md and as WORKDIR/report/tables/NAME.{md,json}.

Kinds of rows (`table.kind`):
- 'alignment': the label stage over the task's alignment subset only (paper Table 2,
  the 1-shot trials, self-consistency, Table 3). Row spec keys: `prompt` (PromptVariant
  fields replacing those of the configured prompt `label.variant`: preamble, num_shots,
  cot, ...), `labeler_settings`
  (LabelerSettings fields: num_samples, temperature, ...), `labeler_dir` (a labeler model
  directory: WORKDIR-relative or a Hugging Face checkpoint), `exemplar_seed` (random
  few-shot exemplars from the training preferences).
- 'reward': the reward stage (v1's RM accuracy vs number of training pairs, Table 5/7
  variants). Row spec keys: `preferences` ('ai' | 'human'), `max_train_pairs` (a count)
  or `train_fraction` (a share of the training pairs), `label_dir`, `init_from`.
- 'results': no runs; numbers read from an experiment's report/metrics.json (Table 1,
  harmless rates, App. J, App. N, the combination experiment). Row spec keys: `metric`
  (a key of metrics.json, or a list of keys: the first present is used), `metrics_file`
  (another stage's metrics under WORKDIR for this row, e.g. a second label run's
  'labels_detailed_cot/metrics.json').
Every kind: `paper_row` (the row's name in `paper_numbers`, default the row name) and
`title` (the text of the row, default the row name).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gin
import numpy as np

from rlaif_jax import artifacts, fs, paper_numbers, report_sections
from rlaif_jax.paper_table_render import render_table

logger = logging.getLogger("rlaif_jax.table")

KINDS = ("alignment", "reward", "results")
TABLES_DIR = "tables"
ROW_KEYS = {
    "alignment": {"prompt", "labeler_settings", "labeler_dir", "exemplar_seed"},
    "reward": {"preferences", "max_train_pairs", "train_fraction", "label_dir", "init_from"},
    "results": {"metric", "metrics_file"},
}
COMMON_KEYS = {"paper_row", "title"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table: its name (a directory name), its spec and where its run goes."""

    name: str
    spec: Mapping[str, Any]

    @property
    def paper_row(self) -> str:
        return str(self.spec.get("paper_row", self.name))

    @property
    def title(self) -> str:
        return str(self.spec.get("title", self.name))


def parse_rows(rows: Sequence[Any], kind: str, binding: str) -> list[Row]:
    """Rows from gin: a list of (name, spec) pairs; errors name the binding and the row."""
    if kind not in KINDS:
        raise ValueError(f"{binding.rsplit('.', 1)[0]}.kind = {kind!r}: use one of {KINDS}.")
    out, seen = [], set()
    for i, item in enumerate(rows):
        if not (isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"{binding}[{i}] = {item!r}: each row is ('name', {{spec}}).")
        name, spec = item
        if not name or "/" in name or name in seen:
            raise ValueError(f"{binding}[{i}]: row name {name!r} is empty, has '/', or repeats.")
        if not isinstance(spec, Mapping):
            raise ValueError(f"{binding}[{i}] ({name}): the spec must be a dict, got {spec!r}.")
        unknown = set(spec) - ROW_KEYS[kind] - COMMON_KEYS
        if unknown:
            raise ValueError(
                f"{binding}[{i}] ({name}): unknown key(s) {sorted(unknown)} for kind {kind!r}; "
                f"keys: {sorted(ROW_KEYS[kind] | COMMON_KEYS)}."
            )
        seen.add(name)
        out.append(Row(name, dict(spec)))
    if not out:
        raise ValueError(f"{binding} is empty.")
    return out


# ------------------------------------------------------------------------------- row runs
def _run_alignment_row(workdir, row_dir, row: Row, objects) -> dict:
    from rlaif_jax.labeling import scoring
    from rlaif_jax.labeling import stage as label_stage
    from rlaif_jax.labeling.labeler import LabelerSettings

    spec = row.spec
    labeler_fn = None
    if "labeler_dir" in spec:
        labeler_fn = functools.partial(
            scoring.labeler_from_checkpoint, model_dir=str(spec["labeler_dir"])
        )
    return label_stage.run_stage(
        workdir=workdir,
        # The row's prompt fields replace those of the configured prompt (`label.variant`).
        variant_overrides=dict(spec.get("prompt", {})),
        labeler_fn=labeler_fn,
        # A row without settings of its own leaves them to gin (`label.settings`).
        **(
            {"settings": LabelerSettings(**dict(spec["labeler_settings"]))}
            if "labeler_settings" in spec
            else {}
        ),
        output_dir=row_dir,
        alignment_only=True,
        # Absent keys are left to gin (e.g. `table2/label.exemplar_seed` for every row).
        **({"exemplar_seed": spec["exemplar_seed"]} if "exemplar_seed" in spec else {}),
        **{k: v for k, v in objects.items() if k in ("mesh", "rules", "data", "policy_pairs")},
    )


def _run_reward_row(workdir, row_dir, row: Row, objects) -> dict:
    from rlaif_jax import reward

    # Absent keys are left to gin (`reward.label_dir`, `reward.init_from`, ...).
    kwargs = {k: v for k, v in row.spec.items() if k in ROW_KEYS["reward"]}
    return reward.run_stage(workdir=workdir, output_dir=row_dir, **kwargs, **objects)


def _row_metrics(workdir: str, row_dir: str) -> dict:
    return dict(artifacts.read_complete(os.path.join(workdir, row_dir))["metrics"])


def run_rows(workdir: str, name: str, kind: str, rows: Sequence[Row], objects) -> dict[str, dict]:
    """{row name: metrics}, running each row not yet complete (each in its own dir)."""
    runner = {"alignment": _run_alignment_row, "reward": _run_reward_row}[kind]
    out = {}
    for i, row in enumerate(rows):
        row_dir = os.path.join(TABLES_DIR, name, row.name)
        if not artifacts.is_complete(os.path.join(workdir, row_dir)):
            t0 = time.time()
            logger.info("table %s: row %d/%d %s", name, i + 1, len(rows), row.name)
            runner(workdir, row_dir, row, objects)
            logger.info("table %s: row %s done in %.1f s", name, row.name, time.time() - t0)
        out[row.name] = _row_metrics(workdir, row_dir)
    return out


def _number(value: Any) -> float | None:
    """A finite float, or None (missing, null or NaN in metrics.json)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        return None
    return float(value)


def _read_json(path: str, binding: str) -> dict:
    if not fs.isfile(path):
        raise FileNotFoundError(f"{path} not found ({binding}).")
    return json.loads(fs.read_text(path))


def results_rows(
    metrics: Mapping[str, Any], rows: Sequence[Row], where: str, workdir: str | None = None
) -> dict[str, dict]:
    """{row name: {value, ci_low, ci_high, metric}} read from an experiment's metrics (a
    row with `metrics_file` reads that file under `workdir` instead)."""
    out = {}
    for row in rows:
        source, source_path = metrics, where
        if "metrics_file" in row.spec:
            source_path = os.path.join(workdir or "", row.spec["metrics_file"])
            source = _read_json(source_path, f"table.rows: {row.name}.metrics_file")
            if isinstance(source.get("metrics"), Mapping):  # a COMPLETE marker
                source = {**source["metrics"], **source}
        keys = row.spec.get("metric", row.name)
        keys = [keys] if isinstance(keys, str) else list(keys)
        key = next((k for k in keys if _number(source.get(k)) is not None), None)
        if key is None:
            logger.warning("table: %s has none of %s (row %s)", source_path, keys, row.name)
            out[row.name] = {"metric": keys[0]}
            continue
        cell = {"metric": key, "value": _number(source[key])}
        for suffix in ("ci_low", "ci_high"):
            cell[suffix] = _number(source.get(f"{key}_{suffix}"))
        out[row.name] = cell
    return out


def _value_cells(kind: str, metrics: Mapping[str, dict]) -> dict[str, dict]:
    """{row: {value, ci_low, ci_high, ...extra columns}} from each kind's own metric names."""
    out = {}
    for name, m in metrics.items():
        if kind == "alignment":
            out[name] = {
                "value": m.get("labeler_alignment"),
                "ci_low": m.get("labeler_alignment_ci_low"),
                "ci_high": m.get("labeler_alignment_ci_high"),
                "single_order": m.get("labeler_alignment_single_order"),
                "same_position": m.get("position_bias_same_position_rate"),
                "n": m.get("num_alignment_pairs"),
            }
        elif kind == "reward":
            out[name] = {
                "value": m.get("pairwise_accuracy"),
                "ci_low": m.get("pairwise_accuracy_ci_low"),
                "ci_high": m.get("pairwise_accuracy_ci_high"),
                "train_pairs": m.get("num_train_pairs"),
                "n": m.get("num_eval_pairs"),
            }
        else:
            out[name] = dict(m)
    return out


def rank_agreement(ours: Sequence[float | None], paper: Sequence[float | None]) -> dict | None:
    """Spearman's rho between our column and the paper's over rows where both exist (>= 3)."""
    pairs = [(o, p) for o, p in zip(ours, paper, strict=True) if o is not None and p is not None]
    if len(pairs) < 3:
        return None
    from scipy import stats

    a, b = np.array(pairs, dtype=float).T
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    rho = stats.spearmanr(a, b)
    return {"rho": float(rho.statistic), "p_value": float(rho.pvalue), "rows": len(pairs)}


@gin.configurable("table")
def run_stage(
    workdir: str = gin.REQUIRED,
    name: str = gin.REQUIRED,
    kind: str = "alignment",
    rows: Sequence[Any] = gin.REQUIRED,
    paper_table: str | None = None,
    task: str | None = None,
    metrics_file: str = "report/metrics.json",
    mesh: Any = None,
    rules: Any = None,
    data: Any = None,
    policy_pairs: Any = None,
    optimizer: Any = None,
    train_settings: Any = None,
) -> dict[str, Any]:
    """Runs (or reads) the rows of table `name` and writes it beside the paper's numbers.

    paper_table: the table of `paper_numbers.TABLES` for the paper column (default
      `name`). task: the task whose paper column is shown (default the data's task, or
      for 'results' the task metrics.json records).
    metrics_file: for kind 'results', the metrics file under WORKDIR rows are read from.
    mesh / rules / data / policy_pairs / optimizer / train_settings: built from gin in
      the step's scope (`rlaif_jax.configurables`) and handed to each row's stage.
    Output: WORKDIR/report/tables/NAME.{md,json}, the section table.NAME of
    WORKDIR/report/report.md, WORKDIR/tables/NAME/COMPLETE.
    """
    start = time.time()
    parsed = parse_rows(rows, kind, "table.rows")
    paper_table = paper_table or name
    if paper_table not in paper_numbers.TABLES:
        raise ValueError(
            f"table.paper_table = {paper_table!r} is not a paper table; one of "
            f"{sorted(paper_numbers.TABLES)}."
        )
    task = task or getattr(data, "task", None)
    if kind == "results":
        path = os.path.join(workdir, metrics_file)
        metrics = _read_json(path, f"table {name}: table.metrics_file")
        task = task or metrics.get("task")  # the evaluated experiment's task
        cells = results_rows(metrics, parsed, path, workdir)
    else:
        objects = {"mesh": mesh, "rules": rules, "data": data, "policy_pairs": policy_pairs}
        if kind == "reward":
            objects.update(optimizer=optimizer, train_settings=train_settings)
        cells = _value_cells(kind, run_rows(workdir, name, kind, parsed, objects))
    table = {
        "name": name,
        "kind": kind,
        "paper_table": paper_table,
        "task": task,
        "title": paper_numbers.TITLES.get(paper_table, name),
        "note": paper_numbers.NOTES.get(paper_table, ""),
        "rows": [
            {
                "row": r.name,
                "title": r.title,
                **cells[r.name],
                "paper": paper_numbers.paper_value(paper_table, r.paper_row, task),
            }
            for r in parsed
        ],
    }
    values = [row.get("value") for row in table["rows"]]
    table["rank_agreement"] = rank_agreement(values, [row["paper"] for row in table["rows"]])
    present = [v for v in values if v is not None]
    if present:
        table["spread"] = {
            "mean": float(np.mean(present)),
            "sd": float(np.std(present, ddof=1)) if len(present) > 1 else 0.0,
            "min": float(np.min(present)),
            "max": float(np.max(present)),
        }
    report_dir = os.path.join(workdir, "report")
    text = render_table(table)
    artifacts.atomic_write(
        os.path.join(report_dir, TABLES_DIR, f"{name}.json"), json.dumps(table, indent=1)
    )
    artifacts.atomic_write(os.path.join(report_dir, TABLES_DIR, f"{name}.md"), text)
    report_sections.upsert_section(report_dir, f"table.{name}", text)
    summary = {"rows": float(len(parsed))}
    if table.get("spread"):
        summary.update({f"{k}_value": v for k, v in table["spread"].items()})
    artifacts.write_complete(os.path.join(workdir, TABLES_DIR, name), summary, time.time() - start)
    logger.info("table %s:\n%s", name, text)
    return table

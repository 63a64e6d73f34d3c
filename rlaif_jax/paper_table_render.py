"""Markdown of one paper table (`rlaif-jax table`): our rows with the paper's column beside."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Extra columns each kind shows between ours and the paper's: (key, header, format).
_EXTRA = {
    "alignment": (
        ("single_order", "one order", "pct"),
        ("same_position", "% same position", "pct"),
        ("n", "pairs", "int"),
    ),
    "reward": (("train_pairs", "training pairs", "int"), ("n", "held-out pairs", "int")),
    "results": (("metric", "metric", "str"),),
}
_HEADER = {"alignment": "alignment", "reward": "RM accuracy", "results": "value"}


def _fmt(value: Any, how: str = "pct") -> str:
    if value is None:
        return "—"
    if how == "int":
        return str(int(value))
    if how == "str":
        return f"`{value}`"
    return f"{100 * float(value):.1f}%"


def _ours(row: Mapping[str, Any]) -> str:
    text = _fmt(row.get("value"))
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        text += f" [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
    return text


def render_table(table: Mapping[str, Any]) -> str:
    """The table as a markdown section: title, what ran, the rows, the spread, the rank
    agreement with the paper's column and the paper's own notes."""
    kind = table["kind"]
    extras = _EXTRA[kind]
    task = table.get("task") or "—"
    lines = [f"## {table['title']} — task {task}", ""]
    header = ["row", f"ours: {_HEADER[kind]} [95% CI]"] + [h for _, h, _ in extras] + ["paper"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in table["rows"]:
        cells = [row["title"], _ours(row)]
        cells += [_fmt(row.get(k), how) for k, _, how in extras]
        cells.append(_fmt(row.get("paper")))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    spread = table.get("spread")
    if spread and len(table["rows"]) > 1:
        lines.append(
            f"Across rows: mean {100 * spread['mean']:.1f}%, sd {100 * spread['sd']:.1f} points, "
            f"min {100 * spread['min']:.1f}%, max {100 * spread['max']:.1f}%."
        )
    agreement = table.get("rank_agreement")
    if agreement:
        lines.append(
            f"Rank agreement with the paper's column: Spearman ρ = {agreement['rho']:.2f} "
            f"(p = {agreement['p_value']:.2g}, {agreement['rows']} rows)."
        )
    elif any(r.get("paper") is not None for r in table["rows"]):
        lines.append("Rank agreement with the paper's column: fewer than 3 comparable rows.")
    if table.get("note"):
        lines.append(f"Paper: {table['note']}")
    return "\n".join(lines) + "\n"

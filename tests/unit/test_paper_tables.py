"""paper_tables.py / paper_table_render.py / report_sections.py / paper_numbers.py: row
specs, results tables beside the paper's column, report.md sections kept by the
evaluation report, rank agreement against SciPy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from rlaif_jax import paper_numbers, paper_tables, report_sections


def test_rows_must_be_named_pairs_with_known_keys_and_errors_name_the_row():
    rows = paper_tables.parse_rows(
        [("base", {"prompt": {"preamble": "base"}}), ("cot", {"prompt": {"cot": True}})],
        "alignment",
        "table2/table.rows",
    )
    assert [r.name for r in rows] == ["base", "cot"]
    assert rows[0].paper_row == "base" and rows[0].title == "base"
    with pytest.raises(
        ValueError, match=r"table2/table.rows\[1\] \(x\): unknown key\(s\) \['metric'\]"
    ):
        paper_tables.parse_rows(
            [("a", {}), ("x", {"metric": "m"})], "alignment", "table2/table.rows"
        )
    with pytest.raises(ValueError, match="repeats"):
        paper_tables.parse_rows([("a", {}), ("a", {})], "alignment", "t.rows")
    with pytest.raises(ValueError, match=r"each row is \('name', \{spec\}\)"):
        paper_tables.parse_rows([{"a": 1}], "reward", "t.rows")
    with pytest.raises(ValueError, match="kind = 'nope'"):
        paper_tables.parse_rows([("a", {})], "nope", "t.rows")
    with pytest.raises(ValueError, match="is empty"):
        paper_tables.parse_rows([], "results", "t.rows")


def test_results_rows_take_the_first_metric_present_and_skip_missing_values():
    rows = paper_tables.parse_rows(
        [
            (
                "rlaif_vs_sft",
                {"metric": ["win_rate_rlaif_vs_sft", "win_rate_rlaif_vs_sft_ai_judge"]},
            ),
            ("rlhf_vs_sft", {"metric": ["win_rate_rlhf_vs_sft", "win_rate_rlhf_vs_sft_ai_judge"]}),
            ("rm_ai", {"metric": "rm_pairwise_accuracy_ai"}),
            ("absent", {"metric": "nothing_here"}),
        ],
        "results",
        "t.rows",
    )
    metrics = {
        "win_rate_rlaif_vs_sft_ai_judge": 0.6,  # no human judge: the AI judge's
        "win_rate_rlhf_vs_sft": None,  # null (a NaN written by the report) is skipped
        "win_rate_rlhf_vs_sft_ai_judge": 0.55,
        "rm_pairwise_accuracy_ai": 0.7,
        "rm_pairwise_accuracy_ai_ci_low": 0.65,
        "rm_pairwise_accuracy_ai_ci_high": 0.75,
    }
    out = paper_tables.results_rows(metrics, rows, "m.json")
    assert out["rlaif_vs_sft"]["metric"] == "win_rate_rlaif_vs_sft_ai_judge"
    assert out["rlaif_vs_sft"]["value"] == 0.6
    assert out["rlhf_vs_sft"] == {
        "metric": "win_rate_rlhf_vs_sft_ai_judge", "value": 0.55, "ci_low": None, "ci_high": None
    }  # fmt: skip
    assert (out["rm_ai"]["ci_low"], out["rm_ai"]["ci_high"]) == (0.65, 0.75)
    assert "value" not in out["absent"]


def test_rank_agreement_is_spearman_over_rows_with_both_values():
    ours = [0.60, 0.70, None, 0.65, 0.72, 0.50]
    paper = [0.761, 0.775, 0.774, None, 0.780, 0.698]
    got = paper_tables.rank_agreement(ours, paper)
    keep = [(o, p) for o, p in zip(ours, paper) if o is not None and p is not None]
    a, b = np.array(keep).T
    # Spearman = Pearson correlation of the ranks (no ties here).
    ref = np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1]
    assert got["rows"] == 4
    assert got["rho"] == pytest.approx(ref)
    assert got["p_value"] == pytest.approx(stats.spearmanr(a, b).pvalue)
    assert paper_tables.rank_agreement([0.1, 0.2], [0.3, 0.4]) is None  # < 3 rows


def test_paper_numbers_are_the_papers():
    assert paper_numbers.paper_value("table2", "detailed_cot_0shot", "summarize") == 0.780
    assert paper_numbers.paper_value("table2", "base_cot_0shot", "helpful") == 0.691
    assert paper_numbers.paper_value("table2", "base_2shot", "harmless") == 0.721
    assert paper_numbers.paper_value("table2", "detailed_8shot", "helpful") is None
    assert paper_numbers.paper_value("table1", "d_rlaif_vs_sft", "helpful") == 0.66
    assert paper_numbers.paper_value("table3", "xsmall", "summarize") == 0.627
    assert paper_numbers.paper_value("self_consistency", "t1.0_16samples", "summarize") == 0.728
    assert paper_numbers.paper_value("table5", "rm_human", "harmless") == 0.721
    assert paper_numbers.paper_value("table1", "rlaif_vs_sft", None) is None
    with pytest.raises(KeyError, match="unknown paper table"):
        paper_numbers.paper_value("table9", "x", "summarize")


def _metrics_file(workdir, metrics):
    (workdir / "report").mkdir(parents=True, exist_ok=True)
    (workdir / "report" / "metrics.json").write_text(json.dumps(metrics))


def test_a_results_table_is_a_report_section_beside_the_paper_and_survives_the_report(tmp_path):
    _metrics_file(
        tmp_path,
        {
            "win_rate_rlaif_vs_sft": 0.696,
            "win_rate_rlhf_vs_sft": 0.611,
            "win_rate_rlaif_vs_rlhf": 0.592,
        },
    )
    report_sections.write_main(str(tmp_path / "report"), "# rlaif_jax report\n\nmain v1")
    rows = [
        ("rlaif_vs_sft", {"title": "RLAIF vs SFT", "metric": "win_rate_rlaif_vs_sft"}),
        ("rlhf_vs_sft", {"title": "RLHF vs SFT", "metric": "win_rate_rlhf_vs_sft"}),
        ("rlaif_vs_rlhf", {"title": "RLAIF vs RLHF", "metric": "win_rate_rlaif_vs_rlhf"}),
    ]
    table = paper_tables.run_stage(
        workdir=str(tmp_path), name="table1", kind="results", rows=rows, task="summarize"
    )
    assert [r["paper"] for r in table["rows"]] == [0.71, 0.73, 0.50]
    md = (tmp_path / "report" / "tables" / "table1.md").read_text()
    assert "| RLAIF vs SFT | 69.6% | `win_rate_rlaif_vs_sft` | 71.0% |" in md
    assert "Spearman ρ = 0.50" in md  # ranks 3,2,1 vs 2,3,1
    saved = json.loads((tmp_path / "report" / "tables" / "table1.json").read_text())
    assert saved["rows"][1]["value"] == 0.611
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.startswith("# rlaif_jax report\n\nmain v1")
    assert "<!-- section:table.table1 -->" in report and md.strip() in report
    # The evaluation stage rewrites the main part; the table's section stays.
    report_sections.write_main(str(tmp_path / "report"), "# rlaif_jax report\n\nmain v2")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "main v1" not in report and "main v2" in report and md.strip() in report
    # A rerun of the table replaces its own section in place (once, same position).
    _metrics_file(tmp_path, {"win_rate_rlaif_vs_sft": 0.5})
    report_sections.upsert_section(str(tmp_path / "report"), "table.other", "## other\n")
    paper_tables.run_stage(
        workdir=str(tmp_path), name="table1", kind="results", rows=rows[:1], task="summarize"
    )
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.count("<!-- section:table.table1 -->") == 1
    assert report.index("table.table1") < report.index("table.other")
    assert "| RLAIF vs SFT | 50.0% |" in report and "69.6%" not in report


def test_results_table_without_metrics_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="report/metrics.json not found"):
        paper_tables.run_stage(
            workdir=str(tmp_path), name="table1", kind="results", rows=[("a", {"metric": "m"})]
        )
    with pytest.raises(ValueError, match="table.paper_table = 'nope'"):
        paper_tables.run_stage(
            workdir=str(tmp_path), name="x", kind="results", rows=[("a", {})], paper_table="nope"
        )

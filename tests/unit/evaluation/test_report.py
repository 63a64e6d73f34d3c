"""evaluation/report.py: report.md shows the bootstrap intervals of labeler alignment
and RM accuracy."""

from __future__ import annotations

from rlaif_jax.evaluation import report


def test_report_shows_bootstrap_intervals_of_alignment_and_rm_accuracy():
    metrics = {
        "win_rates": [],
        "policies": {},
        "alignment_by_variant": {
            "base": {
                "labeler_alignment": 0.7,
                "labeler_alignment_ci_low": 0.65,
                "labeler_alignment_ci_high": 0.75,
            }
        },
        "rm_pairwise_accuracy_ai": 0.6,
        "rm_pairwise_accuracy_ai_ci_low": 0.55,
        "rm_pairwise_accuracy_ai_ci_high": 0.66,
        "rm_pairwise_accuracy_human": 0.62,  # an older RM without an interval
    }
    text = report.render_markdown(metrics)
    assert "| base | 70.0% [65.0%, 75.0%] |" in text
    assert "| AI feedback (RLAIF) | 60.0% [55.0%, 66.0%] |" in text
    assert "| human feedback (RLHF) | 62.0% |" in text

"""Evaluation: win rates (AI judge, toy oracle), length control, alignment, report."""

"""Evaluation: win rates (AI judge, toy oracle), length control, harmless rates, report
(labeler alignment metrics live in `rlaif_jax.labeling.alignment`)."""

"""AI preference labeling (paper §1.3, §2): prompts, rendering, both-order soft labels,
chain of thought, self-consistency, d-RLAIF scoring, labeler alignment and position
bias (`alignment`), and the `label` stage."""

"""AI preference labeling (paper §1.3, §2): prompts, rendering, both-order soft labels,
chain of thought, self-consistency, d-RLAIF scoring and the `label` stage."""

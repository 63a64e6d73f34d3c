"""rlaif_jax: RL from AI feedback (Lee et al., arXiv 2309.00267) in JAX/Flax."""

__version__ = "0.1.0"

"""RL stage: A2C losses, rollouts, reward functions (RM / d-RLAIF), model roles."""

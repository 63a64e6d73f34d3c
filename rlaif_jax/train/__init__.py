"""The shared sharded train loop, optimizers, losses, checkpoints and metrics."""

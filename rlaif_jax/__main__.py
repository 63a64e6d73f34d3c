"""`python -m rlaif_jax STAGE ...` is the same as `rlaif-jax STAGE ...`."""

from rlaif_jax.cli import entry_point

entry_point()

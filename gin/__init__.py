"""Gin configs shipped with rlaif_jax (installed as package `rlaif_jax.gin`)."""

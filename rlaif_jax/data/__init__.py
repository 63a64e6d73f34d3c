"""Data: real file formats, seqio tasks, vocabularies, batching (the toy world: rlaif_jax.toy)."""

"""Data: real file formats, seqio tasks, vocabularies, the toy world, batching."""

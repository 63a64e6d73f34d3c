"""Decoding: the KV-cache sampler and the teacher-forced / candidate-token scorer."""

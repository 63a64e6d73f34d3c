"""The toy world's model presets, registered into `models.config`'s preset table.

Imported by the toy gin files (`import rlaif_jax.toy.presets`) and by whatever else names
these presets (the toy package's own modules, tests, `rlaif-jax bench`); the real path
never imports it, so no real run can fall back to a toy model by accident.
"""

from __future__ import annotations

from rlaif_jax.models.config import register_preset

# The toy world runs end to end on a 2-core CPU (fp32 there): a policy over a 768-piece
# BPE vocab of the toy corpus and the labeling prompts (the demo's labeler starts from the
# SFT policy), and a larger labeler preset with its own vocab.
TOY_POLICY = dict(
    vocab_size=768,
    d_model=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=4,
    head_dim=32,
    mlp_dim=384,
    dtype="float32",
    max_len=512,
)
TOY_LABELER = dict(
    vocab_size=768,
    d_model=160,
    num_layers=3,
    num_heads=5,
    num_kv_heads=5,
    head_dim=32,
    mlp_dim=448,
    dtype="float32",
    max_len=1024,
)

register_preset("toy_policy", TOY_POLICY)
register_preset("toy_labeler", TOY_LABELER)

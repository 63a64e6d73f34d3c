"""Logical axis names used by every model and step function.

Model code names axes with these constants and never sees a Mesh; a rules table
(`rlaif_jax.sharding.rules`) maps them to the mesh axes ('data', 'fsdp', 'tensor').

Parameter axes and activation axes have distinct names so that FSDP can shard a
parameter's embedding dimension over 'fsdp' while activations shard their batch
over the same mesh axis.
"""

# Mesh axes.
DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# Parameter axes.
VOCAB = "vocab"  # embedding / unembedding rows
EMBED = "embed"  # model dimension D of weights
HEADS = "heads"  # query heads H
KV_HEADS = "kv_heads"  # key/value heads (GQA/MQA)
HEAD_DIM = "head_dim"  # per-head dimension
MLP = "mlp"  # hidden dimension of the gated MLP
NORM = "norm"  # scale vectors of norms (never sharded)

# Activation axes.
ACT_BATCH = "act_batch"  # B
ACT_LENGTH = "act_length"  # L
ACT_EMBED = "act_embed"  # D
ACT_HEADS = "act_heads"  # H
ACT_KV_HEADS = "act_kv_heads"
ACT_HEAD_DIM = "act_head_dim"
ACT_MLP = "act_mlp"
ACT_VOCAB = "act_vocab"  # V of logits
CACHE_LENGTH = "cache_length"  # S of a KV cache

PARAM_AXES = (VOCAB, EMBED, HEADS, KV_HEADS, HEAD_DIM, MLP, NORM)
ACTIVATION_AXES = (
    ACT_BATCH,
    ACT_LENGTH,
    ACT_EMBED,
    ACT_HEADS,
    ACT_KV_HEADS,
    ACT_HEAD_DIM,
    ACT_MLP,
    ACT_VOCAB,
    CACHE_LENGTH,
)

"""Logical-axis -> mesh-axis rules tables (t5x style), selected by name.

Three tables cover the usual layouts:

- ``dp``: pure data parallelism; params replicated, batch over ('data', 'fsdp').
- ``fsdp``: params' embedding dim sharded over 'fsdp' (ZeRO-3 style), batch over
  ('data', 'fsdp').
- ``fsdp_tp``: as fsdp, plus heads / MLP / vocab sharded over 'tensor'
  (Megatron-style tensor parallelism).

A rule maps a logical name to a mesh axis, a tuple of mesh axes or None
(replicated). Names missing from a table are replicated.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlaif_jax.sharding import axes as ax

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

_BATCH = (ax.DATA, ax.FSDP)

_COMMON_ACTIVATIONS: Rules = (
    (ax.ACT_BATCH, _BATCH),
    (ax.ACT_LENGTH, None),
    (ax.ACT_EMBED, None),
    (ax.ACT_HEAD_DIM, None),
    (ax.CACHE_LENGTH, None),
)

DP: Rules = _COMMON_ACTIVATIONS + (
    (ax.ACT_HEADS, None),
    (ax.ACT_KV_HEADS, None),
    (ax.ACT_MLP, None),
    (ax.ACT_VOCAB, None),
)

FSDP: Rules = DP + ((ax.EMBED, ax.FSDP),)

FSDP_TP: Rules = _COMMON_ACTIVATIONS + (
    (ax.ACT_HEADS, ax.TENSOR),
    (ax.ACT_KV_HEADS, ax.TENSOR),
    (ax.ACT_MLP, ax.TENSOR),
    (ax.ACT_VOCAB, ax.TENSOR),
    (ax.EMBED, ax.FSDP),
    (ax.HEADS, ax.TENSOR),
    (ax.KV_HEADS, ax.TENSOR),
    (ax.MLP, ax.TENSOR),
    (ax.VOCAB, ax.TENSOR),
)

TABLES: dict[str, Rules] = {"dp": DP, "fsdp": FSDP, "fsdp_tp": FSDP_TP}


def get_rules(name: str = "fsdp", extra: Sequence[tuple[str, object]] = ()) -> Rules:
    """Returns the rules table `name` ('dp', 'fsdp', 'fsdp_tp'), with `extra` rules first.

    Rules listed earlier win (flax semantics), so `extra` overrides the table.
    """
    if name not in TABLES:
        raise ValueError(
            f"Unknown sharding rules table {name!r} (get_rules.name); "
            f"choose one of {sorted(TABLES)}."
        )
    return tuple(tuple(r) for r in extra) + TABLES[name]

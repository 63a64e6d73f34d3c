"""References the unit tests of several packages share."""

from __future__ import annotations

import numpy as np


def _reference_agreement(pred_margin, label):
    """NumPy reference: 1 if the model's preferred side (margin > 0: response1) is the
    label's, 0 if the other, 0.5 when either side is a tie."""
    out = []
    for m, y in zip(pred_margin, label):
        if m == 0 or y == 0.5:
            out.append(0.5)
        else:
            out.append(float((m > 0) == (y > 0.5)))
    return np.array(out)


def device0_bytes(tree, part: str | None = None) -> int:
    """Bytes the live arrays of `tree` (the leaves under the key `part`, or all) hold on
    the first device: what a memory plan's per-device row must match."""
    import jax

    dev = jax.devices()[0]
    total = 0
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        if part is None or f"'{part}'" in jax.tree_util.keystr(path):
            total += sum(int(s.data.nbytes) for s in x.addressable_shards if s.device == dev)
    return total


def analysed_bytes(tree) -> int:
    """memory_analysis() argument bytes per device of a program that reads `tree`."""
    import jax

    from rlaif_jax.sharding import memory

    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree
    )
    return memory.compiled_memory(
        lambda t: [x.sum() for x in jax.tree.leaves(t)], abstract
    ).argument

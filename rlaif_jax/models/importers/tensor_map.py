"""Lazy views from HF tensors to our parameter layouts, and their exact inverses.

An HF tensor becomes one of our parameters through a reshape and a transpose (both
numpy views of the memory map, so nothing is read yet), e.g. q_proj [H*Dh, D] ->
reshape [H, Dh, D] -> transpose (2, 0, 1) -> our [D, H, Dh]. Parameters built from
several HF tensors (layers stacked by `nn.scan`, fused kernels) are a `Stack` of such
views, which reads only the parts a device's slice touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Piece:
    """One HF tensor and how its view becomes (part of) one of our parameters.

    hf_shape: the tensor's shape in the checkpoint.
    reshape: applied to the HF tensor first (None: keep).
    perm: then transposed (None: keep).
    """

    hf_name: str
    hf_shape: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    perm: tuple[int, ...] | None = None

    def ours_shape(self) -> tuple[int, ...]:
        shape = self.reshape or self.hf_shape
        return tuple(shape[p] for p in self.perm) if self.perm else tuple(shape)

    def to_ours(self, hf_view: np.ndarray) -> np.ndarray:
        """A view (no copy) of the HF tensor in our layout."""
        v = hf_view.reshape(self.reshape) if self.reshape else hf_view
        return v.transpose(self.perm) if self.perm else v

    def to_hf(self, ours: np.ndarray) -> np.ndarray:
        """Inverse of `to_ours` on a host array."""
        v = ours.transpose(np.argsort(self.perm)) if self.perm else ours
        return v.reshape(self.hf_shape)


@dataclass(frozen=True)
class ParamMap:
    """One of our parameters: its tree path and the HF pieces it is stacked from.

    `stack_axis` None means exactly one piece; otherwise the pieces are stacked along a
    new axis at `stack_axis` of our parameter (e.g. 0 for scanned layers).
    """

    path: tuple[str, ...]
    pieces: tuple[Piece, ...]
    stack_axis: int | None = None

    def ours_shape(self) -> tuple[int, ...]:
        shape = list(self.pieces[0].ours_shape())
        if self.stack_axis is not None:
            shape.insert(self.stack_axis, len(self.pieces))
        return tuple(shape)

    def split(self, ours: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Our host array -> [(hf_name, HF array)] (export)."""
        if self.stack_axis is None:
            return [(self.pieces[0].hf_name, self.pieces[0].to_hf(ours))]
        parts = np.moveaxis(ours, self.stack_axis, 0)
        return [(p.hf_name, p.to_hf(parts[i])) for i, p in enumerate(self.pieces)]


class Stack:
    """A lazy `np.stack(views, axis)`: indexing reads only the views it selects."""

    def __init__(self, views: Sequence[np.ndarray], axis: int):
        self.views, self.axis = list(views), axis
        inner = list(views[0].shape)
        inner.insert(axis, len(views))
        self.shape = tuple(inner)
        self.dtype = views[0].dtype

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (len(self.shape) - len(index))
        chosen = range(len(self.views))[index[self.axis]]
        rest = index[: self.axis] + index[self.axis + 1 :]
        return np.stack([np.asarray(self.views[i][rest]) for i in chosen], axis=self.axis)


def lazy_source(pm: ParamMap, hf_views: Sequence[np.ndarray]) -> np.ndarray | Stack:
    """The lazy array of parameter `pm` given the HF tensors of its pieces (in order)."""
    views = [p.to_ours(v) for p, v in zip(pm.pieces, hf_views)]
    return views[0] if pm.stack_axis is None else Stack(views, pm.stack_axis)

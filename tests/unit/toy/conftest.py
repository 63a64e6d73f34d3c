"""The toy world at its default sizes (the distribution the demo sees), one per module."""

from __future__ import annotations

import pytest

from rlaif_jax.toy.world import ToyWorld, ToyWorldConfig


@pytest.fixture(scope="module")
def world() -> ToyWorld:
    return ToyWorld(ToyWorldConfig(seed=0))  # default sizes: the distribution the demo sees

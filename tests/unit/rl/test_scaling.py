"""rl/scaling.py: the plans of docs/scaling.md are built from the real Gemma-2 shapes and
laid out per chip on abstract meshes (no devices of that kind here)."""

from __future__ import annotations

import dataclasses

import pytest

from rlaif_jax.models.config import num_params
from rlaif_jax.rl import scaling

GB = 1e9


def test_gemma2_configs_have_the_published_sizes():
    assert num_params(scaling.model("gemma-2-2b")) == pytest.approx(2.614e9, rel=1e-3)
    assert num_params(scaling.model("gemma-2-9b")) == pytest.approx(9.242e9, rel=1e-3)
    c = scaling.model("gemma-2-9b")
    assert (c.d_model, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp_dim) == (
        3584,
        42,
        16,
        8,
        256,
        14336,
    )


def test_roles_are_sharded_per_chip_and_the_reward_role_can_have_its_own_chips():
    h100, v5e, _ = scaling.HARDWARE
    one = {
        r.role: r
        for r in scaling.rl_plan(h100, "gemma-2-2b", "gemma-2-2b", False, scaling.AS_TODAY).roles
    }
    assert one["policy"].params == pytest.approx(2.614e9 * 4, rel=1e-3)  # f32 master weights
    assert one["policy"].opt_state == pytest.approx(2 * one["policy"].params, rel=1e-3)  # Adam
    eight = scaling.rl_plan(v5e, "gemma-2-2b", "gemma-2-9b", True, scaling.PLANNED)
    roles = {r.role: r for r in eight.roles}
    assert roles["policy"].params == pytest.approx(one["policy"].params / 8, rel=0.01)
    assert roles["labeler"].params == pytest.approx(9.242e9 * 2 / 8, rel=0.01)  # bf16
    assert roles["anchor"].params == pytest.approx(roles["policy"].params / 2, rel=0.01)
    split = dataclasses.replace(scaling.PLANNED, split=4)
    placed = {
        r.role: r for r in scaling.rl_plan(v5e, "gemma-2-2b", "gemma-2-9b", True, split).roles
    }
    assert placed["policy"].devices == (0, 1, 2, 3) and placed["labeler"].devices == (4, 5, 6, 7)
    assert placed["labeler"].params == pytest.approx(roles["labeler"].params * 2, rel=0.01)
    # Today's defaults do not fit one H100 (f32 everything, a whole step's activations).
    assert not scaling.rl_plan(h100, "gemma-2-2b", "gemma-2-2b", False, scaling.AS_TODAY).fits

"""rl/runner.py: RLSettings refuse off-policy updates."""

import pytest

from rlaif_jax.rl.runner import RLSettings


def test_rl_settings_refuse_off_policy_updates():
    assert RLSettings(updates_per_batch=1).updates_per_batch == 1
    for bad in (2, 4, 0):
        with pytest.raises(ValueError, match=r"RLSettings\.updates_per_batch.*importance ratio"):
            RLSettings(updates_per_batch=bad)

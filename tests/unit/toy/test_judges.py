"""toy/judges.py: the toy oracle reward is the oracle's quality of each response."""

from __future__ import annotations

import numpy as np
import pytest

from rlaif_jax.rl import rewards


def test_toy_oracle_reward_is_the_oracle_quality_per_response():
    from rlaif_jax.toy import judges
    from rlaif_jax.toy import text as toy_text
    from rlaif_jax.toy.world import ToyWorld

    post = ToyWorld().post("eval", 0)
    perfect = toy_text.render_summary(post.key_facts)
    looped = toy_text.render_summary(post.key_facts[:1] * 3)
    fn = judges.toy_oracle_reward("unused", None, None, task="summarize")
    r = fn([post.context] * 3, [perfect, looped, "garbage words"])
    assert isinstance(fn, rewards.RewardFn) and r.dtype == np.float32 and r.shape == (3,)
    assert r[0] == pytest.approx(1.0)
    # One of n key facts, stated three times: coverage 1/n, two repeats, 8 excess tokens.
    n = len(post.key_facts)
    want = 1 / n - 0.3 * 2 - 0.1 * max(0, 12 - 4 * n) / 4
    assert r[1] == pytest.approx(want, abs=1e-6)
    assert r[2] < 0  # a broken chunk
    with pytest.raises(ValueError, match="contexts"):
        fn([post.context], [perfect, perfect])

"""`profile_steps`: a jax.profiler trace of the chosen steps of a run, in TensorBoard's
profile-plugin layout under the run's profile directory; bad values name the binding."""

import glob
import os

import gin
import jax.numpy as jnp
import optax
import pytest

from rlaif_jax import configurables
from rlaif_jax.rl.runner import RLSettings
from rlaif_jax.train import loop, profiler
from rlaif_jax.train import state as train_state
from rlaif_jax.train.supervised import TrainSettings


def _run(tmp_path, settings, profile_dir=None, start_state=None):
    state = start_state or train_state.TrainState.create({"w": jnp.zeros(4)}, optax.sgd(0.1))

    def step(st, local):
        st = st.replace(step=st.step + 1, params={"w": st.params["w"] + local})
        return st, {"loss": jnp.sum(st.params["w"])}

    return loop.run_training(
        stage="t",
        state=state,
        step=step,
        make_batches=lambda pos: iter(range(1, 100)),
        data_position=lambda it: {},
        settings=settings,
        ckpt_dir=str(tmp_path / "ckpt"),
        metrics_path=str(tmp_path / "logs" / "t" / "metrics.jsonl"),
        profile_dir=profile_dir,
    )


def test_trace_of_the_chosen_steps_is_written(tmp_path):
    _run(tmp_path, loop.LoopSettings(num_steps=4, profile_steps=(2, 3)))
    traces = glob.glob(str(tmp_path / "logs" / "t" / "profile" / "plugins" / "profile" / "*" / "*"))
    assert any(t.endswith(".xplane.pb") for t in traces), traces
    assert all(os.path.getsize(t) > 0 for t in traces)


def test_no_trace_without_profile_steps_or_past_them(tmp_path):
    _run(tmp_path / "a", loop.LoopSettings(num_steps=2))
    assert not (tmp_path / "a" / "logs" / "t" / "profile").exists()
    # A run resumed past the range traces nothing.
    _run(tmp_path / "b", loop.LoopSettings(num_steps=3))
    _run(tmp_path / "b", loop.LoopSettings(num_steps=5, profile_steps=(1, 2)), str(tmp_path / "p"))
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("bad", [(3, 2), (0, 1), (1,), "5,8", (1.0, 2)])
def test_bad_profile_steps_name_the_binding(bad):
    with pytest.raises(ValueError, match=r"TrainSettings\.profile_steps"):
        TrainSettings(profile_steps=bad)
    with pytest.raises(ValueError, match=r"RLSettings\.profile_steps"):
        RLSettings(profile_steps=bad)
    with pytest.raises(ValueError, match="profile_steps"):
        profiler.check_profile_steps(bad)


def test_profile_steps_from_gin():
    gin.parse_config("TrainSettings.profile_steps = (5, 8)")
    assert configurables.build_train_settings().profile_steps == (5, 8)
    gin.clear_config()
    gin.parse_config("TrainSettings.profile_steps = [5, 8]")
    assert configurables.build_train_settings().profile_steps == (5, 8)

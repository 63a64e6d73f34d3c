"""Every test sees 8 fake CPU devices (set before jax is imported)."""

import importlib.util
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)

# rlax (the reference of tests/unit/rl/test_a2c.py) pulls distrax and TFP's JAX substrate;
# imported after TensorFlow (which the TensorBoard writer of any earlier test in the same
# worker loads), TFP validates a TF environment that needs tf_keras and the import fails.
# Imported first, before TensorFlow, it never does.
if importlib.util.find_spec("rlax") is not None:
    import rlax  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _clear_gin():
    """Gin state is global: every test starts and ends with an empty config."""
    import gin

    gin.clear_config()
    yield
    gin.clear_config()

"""The CLI's persistent compilation cache (runtime.compilation_cache): a stage run writes
its compiled programs under WORKDIR/cache/jax_compile (JAX reads them back in any later
process that compiles the same program), and the jax config is restored after the block."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from rlaif_jax import runtime


def _compile_something(n):
    # Compiles in well under the 0.2 s threshold: the tests lower it to 0.
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * n)
    return f(jnp.ones((8, 8)))


def test_cache_written_under_workdir_and_config_restored(tmp_path, monkeypatch):
    monkeypatch.delenv(runtime.COMPILE_CACHE_ENV, raising=False)
    monkeypatch.setattr(runtime, "COMPILE_CACHE_MIN_SECONDS", 0.0)
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    with runtime.compilation_cache(str(tmp_path)) as cache_dir:
        assert cache_dir == os.path.join(str(tmp_path), "cache", "jax_compile")
        assert jax.config.jax_compilation_cache_dir == cache_dir
        _compile_something(3.0)
    assert os.listdir(cache_dir), "no compiled program was written"
    assert jax.config.jax_compilation_cache_dir is None
    assert jax.config.jax_persistent_cache_min_compile_time_secs == before


def test_remote_workdir_and_explicit_setting_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv(runtime.COMPILE_CACHE_ENV, raising=False)
    with runtime.compilation_cache("gs://bucket/run") as cache_dir:
        assert cache_dir is None and jax.config.jax_compilation_cache_dir is None
    monkeypatch.setenv(runtime.COMPILE_CACHE_ENV, str(tmp_path / "mine"))
    with runtime.compilation_cache(str(tmp_path)) as cache_dir:
        assert cache_dir == str(tmp_path / "mine")
    assert not (tmp_path / "cache").exists()

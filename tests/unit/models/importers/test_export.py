"""models/importers/export.py: bf16 export and sharded files (tiny random transformers
checkpoints, PyTorch CPU)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch", reason="torch (CPU) is needed to build reference models")
pytest.importorskip("transformers", reason="transformers builds reference models")

from rlaif_jax.models.importers import hf as hf_import  # noqa: E402
from rlaif_jax.models.importers import safetensors_io as sio  # noqa: E402
from rlaif_jax.models.importers.export import export_hf  # noqa: E402
from rlaif_jax.models.importers.hf_config import config_kwargs  # noqa: E402
from rlaif_jax.sharding.mesh import make_mesh  # noqa: E402
from tests.unit.models.importers._helpers import (  # noqa: E402
    _abstract_from_maps,
    _tensors,
    _tiny_hf,
)


def test_bf16_export_and_sharded_files(tmp_path):
    import ml_dtypes

    src = str(tmp_path / "hf")
    _tiny_hf("llama", src)
    with sio.Checkpoint(src) as ckpt:
        fam, kw = config_kwargs(ckpt.config)
        maps = hf_import.param_map(fam, kw)
        mesh = make_mesh(data=8)
        params = hf_import.load_params(ckpt, maps, _abstract_from_maps(maps, mesh, jnp.bfloat16))
    files = export_hf(str(tmp_path / "a"), params, kw, fam, max_shard_bytes=20_000)
    assert sio.INDEX_FILE in files and len(files) > 3
    export_hf(str(tmp_path / "b"), params, kw, fam, dtype=ml_dtypes.bfloat16)
    a, b = _tensors(str(tmp_path / "a")), _tensors(str(tmp_path / "b"))
    assert a == b and all(dt == ml_dtypes.bfloat16 for dt, _ in a.values())
    with sio.Checkpoint(str(tmp_path / "a")) as ckpt:  # bf16 values are the rounded f32 ones
        ref = sio.Checkpoint(src)
        for n in ckpt.names:
            np.testing.assert_array_equal(ckpt.tensor(n), ref.tensor(n).astype(ml_dtypes.bfloat16))

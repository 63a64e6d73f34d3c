"""Every gin file shipped in gin/ parses (with its stage modules imported)."""

import importlib
import os

import gin
import pytest

from rlaif_jax import cli, gin_utils

GIN_ROOT = gin_utils.default_search_paths()[0]
FILES = gin_utils.all_gin_files([GIN_ROOT])


def _import_all_stages():
    for module, _ in cli.STAGES.values():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:  # a stage not written yet is not a gin-file failure
            if not e.name or not e.name.startswith("rlaif_jax"):
                raise
    for module in (
        "rlaif_jax.configurables",  # the Core / Data objects gin files bind
        "tests.unit.cli_test_stage",
    ):
        importlib.import_module(module)


def test_there_are_gin_files():
    assert FILES, f"no gin files under {GIN_ROOT}"


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(f, GIN_ROOT) for f in FILES])
def test_gin_file_parses(path):
    _import_all_stages()
    gin.clear_config()
    gin.add_config_file_search_path(GIN_ROOT)
    # skip_unknown=False: a typo in a configurable name must fail here.
    gin.parse_config_files_and_bindings([path], [], skip_unknown=False, finalize_config=False)

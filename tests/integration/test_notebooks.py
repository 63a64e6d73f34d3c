"""The Colab notebooks under notebooks/ run top to bottom at toy-tiny scale, and are
committed without outputs.

The notebooks run in fresh `python3` kernels of this environment on ONE CPU device (as on a
Colab CPU runtime: conftest.py's 8-fake-device XLA flag is removed from the kernel's
environment), with their default parameters (the tiny gin) except for the work directory:
they share one, in the order a user would go, so every stage trains once.

- labeler_playground: bootstraps the labeler (with the CoT prompt) in the fresh workdir;
- toy_reproduction: runs the whole pipeline there, reusing that labeler;
- reward_model_inspection: reloads the pipeline's RLHF reward model (its pipeline call
  skips every finished step).
"""

from __future__ import annotations

import os
import re

import pytest

NOTEBOOK_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "notebooks"))
REPO_ROOT = os.path.dirname(NOTEBOOK_DIR)
RUN_ORDER = (
    "labeler_playground.ipynb",
    "toy_reproduction.ipynb",
    "reward_model_inspection.ipynb",
)
CELL_TIMEOUT_S = 600


def _read(name: str):
    import nbformat

    return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


def _with_parameters(nb, **values):
    """Inserts a cell after the one tagged 'parameters' that overrides `values` (the
    papermill convention), so the notebook's own defaults stay what a user runs."""
    from nbformat.v4 import new_code_cell

    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            src = "\n".join(f"{k} = {v!r}" for k, v in values.items())
            nb.cells.insert(i + 1, new_code_cell(src, metadata={"tags": ["injected-parameters"]}))
            return nb
    raise AssertionError("no cell tagged 'parameters'")


def _kernel_env(tmp_path) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = re.sub(
        r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["TMPDIR"] = str(tmp_path)  # anything the notebooks put in temp dirs lands here
    return env


def _errors(nb) -> list:
    return [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") == "error"
    ]


def test_notebooks_are_committed_without_outputs():
    import nbformat

    present = sorted(f for f in os.listdir(NOTEBOOK_DIR) if f.endswith(".ipynb"))
    assert present == sorted(RUN_ORDER)
    for name in RUN_ORDER:
        nb = _read(name)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3", name
        code = [c for c in nb.cells if c.cell_type == "code"]
        for i, cell in enumerate(code):
            assert cell.outputs == [], f"{name}: code cell {i} has outputs"
            assert cell.execution_count is None, f"{name}: code cell {i} has an execution count"
        assert "google.colab" in code[0].source, f"{name}: first code cell is not the Colab setup"
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "WORKDIR = None" in params[0].source, name


@pytest.mark.slow
def test_notebooks_run_top_to_bottom(tmp_path):
    from nbclient import NotebookClient

    workdir = str(tmp_path / "workdir")
    env = _kernel_env(tmp_path)
    for name in RUN_ORDER:
        nb = _with_parameters(_read(name), WORKDIR=workdir)
        client = NotebookClient(
            nb,
            kernel_name="python3",
            timeout=CELL_TIMEOUT_S,
            resources={"metadata": {"path": REPO_ROOT}},
        )
        client.execute(env=env)  # raises CellExecutionError, naming the cell, on any error
        assert not _errors(nb), (name, _errors(nb))
        if name == "labeler_playground.ipynb":
            assert os.path.isfile(os.path.join(workdir, "labeler", "COMPLETE"))
        if name == "toy_reproduction.ipynb":
            assert os.path.isfile(os.path.join(workdir, "report", "metrics.json"))
            shown = [
                out
                for cell in nb.cells
                for out in cell.get("outputs", [])
                if "image/png" in out.get("data", {})
            ]
            assert len(shown) >= 3, "the report's PNG plots were not displayed"

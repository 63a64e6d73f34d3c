"""The notebooks' Colab setup: the first cell (find or clone the checkout) and
notebooks/colab_setup.py (runtime detection from /dev and the environment, the pip
install with constraints.txt and the runtime's extras, the skip on a re-run)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _load_module():
    spec = importlib.util.spec_from_file_location(
        "colab_setup_under_test", REPO / "notebooks" / "colab_setup.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cs = _load_module()


def _first_code_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def _cell_namespace() -> dict:
    assert "google.colab" not in sys.modules
    ns: dict = {}
    exec(compile(_first_code_cell(NOTEBOOKS[0]), "setup_cell", "exec"), ns)  # defines only
    return ns


# The /dev layouts of each runtime (names only: what matters is what exists).
LAYOUTS = {
    "v2-8": ["accel0", "accel1", "accel2", "accel3", "null", "vfio/vfio"],
    "v3-8": ["accel0", "accel1", "accel2", "accel3", "null"],
    "v4-8": ["accel0", "accel1", "accel2", "accel3", "null", "shm/x"],
    "v5e-8": [f"vfio/{i}" for i in range(8)] + ["vfio/vfio", "null"],
    "v6e-1": ["vfio/0", "vfio/vfio", "null", "zero"],
    "cpu": ["null", "zero", "tty", "vfio/vfio", "accelerometer"],
    "gpu": ["nvidia0", "nvidiactl", "nvidia-uvm", "null"],
    "gpu-570-driver": ["nvidia0", "nvidiactl", "accel0", "null"],  # Blackwell drivers
}
EXPECTED = {
    "v2-8": "tpu",
    "v3-8": "tpu",
    "v4-8": "tpu",
    "v5e-8": "tpu",
    "v6e-1": "tpu",
    "cpu": "cpu",
    "gpu": "gpu",
    "gpu-570-driver": "gpu",
}


def _fake_dev(root: Path, names: list[str]) -> Path:
    root.mkdir()
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    return root


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_detect_runtime_from_dev_layout(layout, tmp_path):
    dev = _fake_dev(tmp_path / "dev", LAYOUTS[layout])
    entries = cs.list_dev(str(dev))
    if any(n.startswith("vfio/") for n in LAYOUTS[layout]):
        assert "vfio/vfio" in entries
    assert cs.detect_runtime(entries, {}) == EXPECTED[layout]


def test_detect_runtime_from_environment():
    assert cs.detect_runtime([], {"TPU_ACCELERATOR_TYPE": "v6e-1"}) == "tpu"
    assert cs.detect_runtime(["null"], {"TPU_CHIPS_PER_HOST_BOUNDS": "2,2,1"}) == "tpu"
    # A TPU variable beats an NVIDIA-looking node; COLAB_TPU_ADDR alone is the old remote TPU.
    assert cs.detect_runtime(["nvidia0"], {"TPU_ACCELERATOR_TYPE": "v4-8"}) == "tpu"
    assert cs.detect_runtime([], {"COLAB_TPU_ADDR": "10.0.0.2:8470"}) == "tpu-node"
    assert cs.detect_runtime(["accel0"], {"COLAB_TPU_ADDR": "10.0.0.2:8470"}) == "tpu"
    assert cs.detect_runtime([], {"TPU_ACCELERATOR_TYPE": ""}) == "cpu"
    assert cs.list_dev("/no/such/dev") == []


def _setup_py_extras() -> set[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            return {k.value for k in node.value.keys}
    raise AssertionError("setup.py has no extras_require")


def test_install_command_uses_constraints_and_existing_extras():
    cmd = cs.install_command("/content/rlaif_jax", "tpu", python="/usr/bin/python3")
    assert cmd == [
        "/usr/bin/python3",
        "-m",
        "pip",
        "install",
        "-q",
        "-c",
        "/content/rlaif_jax/constraints.txt",
        "-e",
        "/content/rlaif_jax[colab,tpu]",
    ]
    assert cs.install_command("/r", "gpu")[-1] == "/r[colab,cuda]"
    assert cs.install_command("/r", "cpu")[-1] == "/r[colab]"
    extras = {e for value in cs.EXTRAS.values() for e in value.split(",")}
    assert extras <= _setup_py_extras()


def _fake_repo(root: Path) -> Path:
    root.mkdir()
    (root / "setup.py").write_text("setup()\n")
    (root / "constraints.txt").write_text("jax==0.10.2\n")
    return root


def test_install_runs_pip_once_per_runtime_and_inputs(tmp_path, capsys):
    repo = _fake_repo(tmp_path / "repo")
    tpu_dev = _fake_dev(tmp_path / "dev_v6e", LAYOUTS["v6e-1"])
    gpu_dev = _fake_dev(tmp_path / "dev_gpu", LAYOUTS["gpu"])
    calls = []
    kw = {
        "env": {},
        "stamp_file": str(tmp_path / "cache" / "stamp"),
        "run": lambda cmd, check: calls.append(cmd),
        "modules": {},
        "python": "py",
    }
    assert cs.install(str(repo), dev_root=str(tpu_dev), **kw) == "tpu"
    assert calls == [cs.install_command(str(repo), "tpu", "py")]
    assert cs.install(str(repo), dev_root=str(tpu_dev), **kw) == "tpu"  # re-run: skipped
    assert len(calls) == 1 and "already installed" in capsys.readouterr().out
    (repo / "constraints.txt").write_text("jax==0.10.3\n")  # what pip reads changed
    cs.install(str(repo), dev_root=str(tpu_dev), **kw)
    assert len(calls) == 2
    assert cs.install(str(repo), dev_root=str(gpu_dev), **kw) == "gpu"  # another runtime
    assert calls[-1][-1] == f"{repo}[colab,cuda]"


def test_install_asks_for_a_restart_when_loaded_modules_changed(tmp_path, monkeypatch):
    repo = _fake_repo(tmp_path / "repo")
    real_loaded_versions = cs.loaded_versions
    versions = iter([{"numpy (numpy)": "2.0.2"}, {"numpy (numpy)": "2.3.5"}])
    monkeypatch.setattr(cs, "loaded_versions", lambda modules: next(versions))
    with pytest.raises(cs.RestartNeeded, match=r"numpy \(numpy\) 2.0.2 -> 2.3.5.*Restart"):
        cs.install(
            str(repo),
            env={},
            dev_root=str(tmp_path / "none"),
            stamp_file=str(tmp_path / "stamp"),
            run=lambda cmd, check: None,
        )
    assert (tmp_path / "stamp").is_file()  # the re-run after the restart skips pip
    assert cs.changed({"a (a)": "1", "b (b)": "2"}, {"a (a)": "1"}) == ["b (b) 2 -> removed"]
    assert set(real_loaded_versions({"numpy": object(), "os.path": object()})) == {"numpy (numpy)"}


# --- The first cell --------------------------------------------------------------------


def test_setup_cells_are_one_cell_with_safe_defaults():
    cells = {_first_code_cell(p) for p in NOTEBOOKS}
    assert len(NOTEBOOKS) == 3 and len(cells) == 1  # the same setup in every notebook
    tree = ast.parse(cells.pop())
    defaults = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)
    }
    setup_url = [
        k.value.value
        for k in ast.walk(ast.parse((REPO / "setup.py").read_text()))
        if isinstance(k, ast.keyword) and k.arg == "url"
    ]
    # The form field defaults to the project's published URL once setup.py names one.
    assert defaults["REPO_URL"] == (setup_url[0] if setup_url else "")
    assert defaults["REPO_REF"] == ""
    ns = _cell_namespace()  # off Colab the cell runs nothing and raises nothing
    assert "repo_dir" not in ns


def test_cell_uses_the_checkout_it_runs_in(tmp_path):
    find_or_clone = _cell_namespace()["find_or_clone"]
    calls = []
    run = lambda cmd, check: calls.append(cmd)  # noqa: E731
    for cwd in (REPO, REPO / "notebooks", REPO / "rlaif_jax" / "data"):
        assert find_or_clone("", "", str(cwd), {}, str(tmp_path / "c"), run) == str(REPO)
    assert calls == []


def test_cell_clones_when_no_checkout(tmp_path):
    find_or_clone = _cell_namespace()["find_or_clone"]
    calls = []
    run = lambda cmd, check: calls.append(cmd)  # noqa: E731
    clone, cwd = str(tmp_path / "rlaif_jax"), str(tmp_path)
    assert find_or_clone(" https://x/r.git ", "", cwd, {}, clone, run) == clone
    assert calls == [["git", "clone", "--quiet", "https://x/r.git", clone]]
    calls.clear()
    find_or_clone("", "v1", cwd, {"RLAIF_JAX_REPO_URL": "https://y/r.git"}, clone, run)
    assert calls == [
        ["git", "clone", "--quiet", "https://y/r.git", clone],
        ["git", "-C", clone, "checkout", "--quiet", "v1"],
    ]
    with pytest.raises(RuntimeError, match="Fill in REPO_URL"):
        find_or_clone("", "", cwd, {}, clone, run)
    os.makedirs(os.path.join(clone, "junk"))
    with pytest.raises(RuntimeError, match="not an rlaif_jax checkout"):
        find_or_clone("https://x/r.git", "", cwd, {}, clone, run)


def test_cell_on_colab_installs_from_the_checkout(tmp_path, monkeypatch, capsys):
    """The Colab branch of the cell, with google.colab faked and the install already
    stamped (so no pip runs): it finds this checkout, loads colab_setup.py from it, and
    leaves the kernel in the repository with it on sys.path."""
    monkeypatch.setenv("HOME", str(tmp_path))
    stamped = _load_module()  # STAMP_FILE under the fake home
    runtime = stamped.detect_runtime(stamped.list_dev(), os.environ)
    os.makedirs(os.path.dirname(stamped.STAMP_FILE))
    with open(stamped.STAMP_FILE, "w") as f:
        f.write(stamped.install_stamp(str(REPO), runtime))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(REPO)])
    monkeypatch.chdir(REPO / "notebooks")
    ns: dict = {}
    exec(compile(_first_code_cell(NOTEBOOKS[0]), "setup_cell", "exec"), ns)
    assert ns["repo_dir"] == str(REPO) and os.getcwd() == str(REPO)
    assert sys.path[0] == str(REPO)
    out = capsys.readouterr().out
    assert f"using the checkout in {REPO}" in out and "already installed" in out

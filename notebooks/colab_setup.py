"""Colab setup for the notebooks: which accelerator this runtime has, and the pip install
it needs. The notebooks' first cell finds (or clones) the checkout, then loads this file
from it by path and calls `install(repo_dir)`; so it runs before anything is installed
and imports only the standard library.

    runtime = detect_runtime(list_dev("/dev"), os.environ)   # "tpu" | "gpu" | "cpu" | "tpu-node"
    install_command(repo_dir, runtime)
    # [python, -m, pip, install, -q, -c, REPO/constraints.txt, -e, REPO[colab,tpu]]

Device layouts (names under /dev):
  TPU v2, v3, v4 VMs      accel0 .. accelN, one per chip
  TPU v5e, v5p, v6e VMs   vfio/0 .. vfio/N (VFIO groups, one per chip) beside vfio/vfio,
                          the control node that any VFIO-enabled host has; no accel*
  NVIDIA GPU              nvidia0 .. nvidiaN (+ nvidiactl, nvidia-uvm); drivers >= 570
                          also create accel* nodes, so nvidiaN wins over accel*
  CPU                     none of these
TPU runtimes also set TPU_ACCELERATOR_TYPE or TPU_CHIPS_PER_HOST_BOUNDS (taken as a TPU
whatever /dev shows). COLAB_TPU_ADDR alone (no local chips) is Colab's legacy TPU Node
runtime: the TPU is another machine that current jax cannot drive, so it gets the CPU
install ("tpu-node").
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata

# setup.py extras per runtime (setup.py: colab, tpu = jax[tpu], cuda = jax[cuda12]).
EXTRAS = {"tpu": "colab,tpu", "gpu": "colab,cuda", "cpu": "colab", "tpu-node": "colab"}
STAMP_FILE = os.path.expanduser("~/.cache/rlaif_jax/colab_install_stamp")


class RestartNeeded(RuntimeError):
    """pip replaced packages this kernel had already imported."""


def list_dev(root: str = "/dev") -> list[str]:
    """The names under `root`, with the entries of root/vfio as 'vfio/NAME'."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    vfio = os.path.join(root, "vfio")
    if os.path.isdir(vfio):
        names += ["vfio/" + n for n in os.listdir(vfio)]
    return names


def detect_runtime(dev_entries: Iterable[str], env: Mapping[str, str]) -> str:
    """'tpu', 'gpu', 'cpu' or 'tpu-node' from the names under /dev (as list_dev gives them)
    and the environment; see the module docstring for the layouts."""
    names = set(dev_entries)
    accel = any(re.fullmatch(r"accel\d+", n) for n in names)
    vfio = any(re.fullmatch(r"vfio/\d+", n) for n in names)
    nvidia = any(re.fullmatch(r"nvidia\d+", n) for n in names)
    if env.get("TPU_ACCELERATOR_TYPE") or env.get("TPU_CHIPS_PER_HOST_BOUNDS"):
        return "tpu"
    if nvidia:
        return "gpu"
    if accel or vfio:
        return "tpu"
    if env.get("COLAB_TPU_ADDR"):
        return "tpu-node"
    return "cpu"


def install_command(repo_dir: str, runtime: str, python: str = sys.executable) -> list[str]:
    """pip install of the checkout with the versions in its constraints.txt."""
    constraints = os.path.join(repo_dir, "constraints.txt")
    target = f"{repo_dir}[{EXTRAS[runtime]}]"
    return [python, "-m", "pip", "install", "-q", "-c", constraints, "-e", target]


def install_stamp(repo_dir: str, runtime: str, python: str = sys.executable) -> str:
    """Everything the install depends on; a re-run with the same stamp skips pip."""
    digest = hashlib.sha256()
    for name in ("setup.py", "constraints.txt"):
        with open(os.path.join(repo_dir, name), "rb") as f:
            digest.update(f.read())
    return f"{digest.hexdigest()} {EXTRAS[runtime]} {os.path.abspath(repo_dir)} {python}"


def loaded_versions(modules: Mapping[str, object]) -> dict[str, str]:
    """'module (distribution)' -> installed version, for the top-level modules loaded."""
    importlib.invalidate_caches()
    owners = metadata.packages_distributions()
    versions = {}
    for name in list(modules):
        if "." in name:
            continue
        for dist in owners.get(name, []):
            try:
                versions[f"{name} ({dist})"] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
    return versions


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """'name old -> new' for each entry whose version differs (removed ones included)."""
    return [
        f"{k} {v} -> {after.get(k, 'removed')}"
        for k, v in sorted(before.items())
        if after.get(k) != v
    ]


def install(
    repo_dir: str,
    *,
    env: Mapping[str, str] = os.environ,
    dev_root: str = "/dev",
    stamp_file: str = STAMP_FILE,
    run: Callable[..., object] = subprocess.run,
    modules: Mapping[str, object] = sys.modules,
    python: str = sys.executable,
) -> str:
    """Installs the checkout for this runtime unless the stamp says it already is; returns
    the runtime. Raises RestartNeeded when pip replaced a module this kernel imported."""
    runtime = detect_runtime(list_dev(dev_root), env)
    if runtime == "tpu-node":
        print(
            "This is Colab's legacy TPU Node runtime (COLAB_TPU_ADDR, no TPU chips on this "
            "machine), which current jax cannot use: the notebook runs on the CPU. Pick a TPU "
            "runtime such as v2-8, v5e-1 or v6e-1 under Runtime > Change runtime type."
        )
    stamp = install_stamp(repo_dir, runtime, python)
    if os.path.exists(stamp_file):
        with open(stamp_file) as f:
            if f.read() == stamp:
                print(f"Runtime: {runtime}; rlaif_jax[{EXTRAS[runtime]}] is already installed.")
                return runtime
    cmd = install_command(repo_dir, runtime, python)
    print(f"Runtime: {runtime}; installing (a few minutes): pip {' '.join(cmd[3:])}")
    before = loaded_versions(modules)
    run(cmd, check=True)
    os.makedirs(os.path.dirname(stamp_file), exist_ok=True)
    with open(stamp_file, "w") as f:
        f.write(stamp)
    stale = changed(before, loaded_versions(modules))
    if stale:
        # Modules already imported keep their old code until the kernel restarts.
        raise RestartNeeded(
            "pip replaced packages this kernel had already imported ("
            + "; ".join(stale)
            + "). Restart the session (Runtime > Restart session) and run all cells again; "
            "this cell then skips the install."
        )
    return runtime

"""A bootstrapped labeler as a release: bootstrapped once, exported, installed by runs.

DESIGN §4: the toy world's "off-the-shelf" labeler is a stand-in for an instruction-tuned
LLM, bootstrapped *once*. A bootstrap that makes a good labeler takes far longer than a
demo may (docs/toy_labeler.md), so it can be run once with a recipe gin file and reused:

- `export_release` turns a finished `bootstrap_labeler` stage into a release directory:
  the model in the Hugging Face Llama layout (`config.json` + `model.safetensors`, through
  `models.importers.export`), its SentencePiece vocabulary (`spm.model`) and
  `release.json` (the preset it was built as, the bootstrap's metrics and wall time, the
  recipe gin file's text, package versions and each file's SHA-256).
- `install_release` (gin: `bootstrap_labeler.release = 'NAME'` or a directory) checks the
  files against their checksums and the model against the gin-selected preset, then writes
  WORKDIR/labeler/{ckpt, spm.model} exactly where a bootstrap would have, so the label
  stage, d-RLAIF and the report use it unchanged.

A release given by name (not a path) is looked up in `rlaif_jax/toy/releases/NAME`,
where those shipped with the package live: `toy_world_v1`, the toy world's labeler that
gin/runs/toy_world.gin installs (made with gin/experiments/toy_labeler_release.gin; its
measurements are in its release.json notes and docs/toy_labeler.md).

    python -m rlaif_jax.toy.release --workdir W --out DIR \\
        --model_preset toy_policy --recipe gin/experiments/toy_labeler_release.gin
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from typing import Any

import jax

from rlaif_jax import artifacts
from rlaif_jax.models.config import get_config

# Imported here, not inside the functions: importers.hf registers gin configurables, which
# gin refuses once a stage has locked the config (the bootstrap stage installs releases).
from rlaif_jax.models.importers.export import export_hf
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import model_params
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding.model_params import import_hf
from rlaif_jax.toy import presets as _presets  # noqa: F401  (registers the toy presets)
from rlaif_jax.train.checkpoint import restore_params, save_params

RELEASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "releases")
MANIFEST = "release.json"
FAMILY = "llama"  # the toy presets are Llama-shaped (SwiGLU, RMSNorm, RoPE, untied)
# ModelConfig fields that must agree between a release and the preset it is installed as.
SHAPE_FIELDS = (
    "vocab_size",
    "d_model",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "mlp_dim",
    "mlp_activation",
    "tie_embeddings",
    "rope_theta",
    "norm_eps",
)


class ReleaseError(ValueError):
    """A release that cannot be found, is damaged, or does not fit the configured model."""


def available() -> list[str]:
    """Names of the releases shipped with the package."""
    if not os.path.isdir(RELEASES_DIR):
        return []
    return sorted(
        n
        for n in os.listdir(RELEASES_DIR)
        if os.path.isfile(os.path.join(RELEASES_DIR, n, MANIFEST))
    )


def resolve(name_or_dir: str) -> str:
    """The directory of a release given by name (shipped) or path."""
    for candidate in (name_or_dir, os.path.join(RELEASES_DIR, name_or_dir)):
        if os.path.isfile(os.path.join(candidate, MANIFEST)):
            return os.path.abspath(candidate)
    raise ReleaseError(
        f"bootstrap_labeler.release={name_or_dir!r}: no {MANIFEST} there or in {RELEASES_DIR} "
        f"(shipped releases: {available() or 'none'})."
    )


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("jax", "flax", "orbax-checkpoint", "sentencepiece"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _local_mesh():
    mesh = mesh_lib.make_mesh(data=-1, fsdp=1, tensor=1, devices=jax.local_devices())
    return mesh, rules_lib.get_rules("dp")  # data-parallel: params replicated


def export_release(
    stage_dir: str,
    out_dir: str,
    model_preset: str,
    model_overrides: dict | None = None,
    recipe: str | None = None,
    notes: str = "",
) -> dict[str, Any]:
    """Writes the finished bootstrap stage `stage_dir` (ckpt + spm.model + COMPLETE) as a
    release in `out_dir`; `recipe` is the gin file that reproduces it. Returns the manifest."""
    done = artifacts.read_complete(stage_dir)
    config = get_config(model_preset, **(model_overrides or {}))
    mesh, rules = _local_mesh()
    structs, _ = model_params.abstract_params(config, mesh, rules, "lm")
    params = restore_params(os.path.join(stage_dir, "ckpt"), structs)
    os.makedirs(out_dir, exist_ok=True)
    files = export_hf(out_dir, params, config, FAMILY, head="lm")
    artifacts.atomic_copy(os.path.join(stage_dir, "spm.model"), os.path.join(out_dir, "spm.model"))
    files = sorted(set(files) | {"spm.model"})
    manifest = {
        "model_preset": model_preset,
        "model_overrides": dict(model_overrides or {}),
        "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
        "bootstrap": done,
        "recipe": open(recipe).read() if recipe else None,
        "recipe_file": os.path.basename(recipe) if recipe else None,
        "notes": notes,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
        "files": {f: _sha256(os.path.join(out_dir, f)) for f in files},
    }
    if jax.process_index() == 0:
        artifacts.atomic_write(os.path.join(out_dir, MANIFEST), json.dumps(manifest, indent=1))
    return manifest


def read_manifest(release_dir: str) -> dict[str, Any]:
    """release.json, after checking every listed file against its SHA-256."""
    with open(os.path.join(release_dir, MANIFEST)) as f:
        manifest = json.load(f)
    for name, digest in manifest["files"].items():
        path = os.path.join(release_dir, name)
        if not os.path.isfile(path):
            raise ReleaseError(f"release {release_dir}: {name} is missing.")
        if _sha256(path) != digest:
            raise ReleaseError(
                f"release {release_dir}: {name} does not match its SHA-256 in {MANIFEST} "
                "(damaged, or a Git LFS pointer instead of the file?)."
            )
    return manifest


def install_release(
    release: str,
    stage_dir: str,
    model_preset: str,
    model_overrides: dict | None = None,
) -> dict[str, Any]:
    """Installs `release` (name or directory) into `stage_dir` as {ckpt, spm.model}; the
    model must be the gin-selected `model_preset` + `model_overrides` (the label stage
    builds that architecture). Returns the stage metrics (the bootstrap's own plus
    `release_*` fields)."""
    release_dir = resolve(release)
    manifest = read_manifest(release_dir)
    config = get_config(model_preset, **(model_overrides or {}))
    params, imported = import_hf(
        release_dir,
        *_local_mesh(),
        head="lm",
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        max_len=config.max_len,
    )
    wrong = {
        f: (getattr(imported, f), getattr(config, f))
        for f in SHAPE_FIELDS
        if getattr(imported, f) != getattr(config, f)
    }
    if wrong:
        detail = ", ".join(f"{f}: release {a!r} vs configured {b!r}" for f, (a, b) in wrong.items())
        raise ReleaseError(
            f"release {release_dir} was built as model_preset={manifest['model_preset']!r}, "
            f"model_overrides={manifest['model_overrides'] or None}; the configured labeler "
            f"(model_preset={model_preset!r}, model_overrides={model_overrides}) differs: "
            f"{detail}. "
            "Set bootstrap_labeler.model_preset / model_overrides to the release's."
        )
    save_params(os.path.join(stage_dir, "ckpt"), params, {"release": os.path.basename(release_dir)})
    if jax.process_index() == 0:
        artifacts.atomic_copy(
            os.path.join(release_dir, "spm.model"), os.path.join(stage_dir, "spm.model")
        )
    boot = manifest["bootstrap"]
    metrics = {k: v for k, v in boot.get("metrics", {}).items() if isinstance(v, (int, float))}
    metrics["release_bootstrap_seconds"] = float(boot.get("wall_seconds", 0.0))
    metrics["release_num_params"] = manifest["num_params"]
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rlaif_jax.toy.release",
        description="Export a finished bootstrap_labeler stage as a labeler release.",
    )
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--stage", default="labeler", help="stage dir under WORKDIR")
    parser.add_argument("--out", required=True, help="release directory to write")
    parser.add_argument("--model_preset", default="toy_policy")
    parser.add_argument("--model_overrides", default="{}", help="JSON, e.g. '{\"num_layers\": 4}'")
    parser.add_argument("--recipe", default=None, help="the gin file that reproduces it")
    parser.add_argument("--notes", default="")
    args = parser.parse_args(argv)
    manifest = export_release(
        os.path.join(args.workdir, args.stage),
        args.out,
        args.model_preset,
        json.loads(args.model_overrides),
        recipe=args.recipe,
        notes=args.notes,
    )
    print(json.dumps({k: manifest[k] for k in ("model_preset", "num_params", "files")}, indent=1))


if __name__ == "__main__":
    main()

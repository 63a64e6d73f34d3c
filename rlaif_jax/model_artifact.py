"""Self-describing model directories, and the one loader that builds a role from them.

Every stage that writes a model (sft, rm_ai, rm_human, rl_<name>, a bootstrapped or
installed labeler) writes, next to its orbax checkpoint, what a reader needs:

    <dir>/model.json     {"format", "config": ModelConfig fields, "head", "family",
                          "tokenizer": {kind, files, bos_id, eos_ids, pad_id, adds_bos,
                          chat_template}, "layout": InputLayout fields, "source"}
    <dir>/spm.model  or  tokenizer.json + tokenizer_config.json [+ generation_config.json]
    <dir>/ckpt/          orbax checkpoints (params item)

`open_model(path)` reads such a directory or a Hugging Face checkpoint directory
(config.json + safetensors + tokenizer files; no layout: the task's default applies), and
`load_params` builds the role's params born sharded on a mesh: restored from orbax, or
streamed from safetensors (`sharding.model_params.import_hf`), with an LM trunk copied under a
fresh scalar head for reward / value models. Readers never restate a model's shape or
layout in gin: `ModelArtifact.config_with` / `layout_for` accept gin values only where they
agree with the artifact (compute settings such as dtype and remat may change), and an
override that contradicts the artifact is an error naming both values.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import jax

from rlaif_jax import artifacts, fs
from rlaif_jax.data import tokenizer_files
from rlaif_jax.data.layout import InputLayout, task_layout
from rlaif_jax.models.config import ModelConfig, get_config

MODEL_FILE = "model.json"
FORMAT = "rlaif_jax.model/1"
HEADS = ("lm", "scalar")
# ModelConfig fields a reader may change without changing the function the model computes.
COMPUTE_FIELDS = ("dtype", "param_dtype", "remat", "attention_impl", "max_len")
DEFAULT_FAMILY = "llama"  # randomly initialised presets are Llama-shaped


class ArtifactError(ValueError):
    """A model directory that cannot be read, or a gin value that contradicts it."""


@dataclasses.dataclass(frozen=True)
class ModelArtifact:
    """A model directory read by `open_model`.

    kind: 'rlaif' (model.json + orbax ckpt/) or 'hf' (Hugging Face layout).
    layout: None for a raw HF checkpoint (its task's default applies, `layout_for`).
    vocab: the model's own vocabulary (seqio interface).
    """

    directory: str
    kind: str
    config: ModelConfig
    head: str
    family: str
    tokenizer: Mapping[str, Any]
    layout: InputLayout | None
    vocab: Any
    source: str | None = None

    @property
    def ckpt_dir(self) -> str:
        return os.path.join(self.directory, "ckpt")

    @property
    def where(self) -> str:
        return os.path.join(self.directory, MODEL_FILE if self.kind == "rlaif" else "config.json")

    def config_with(self, overrides: Mapping[str, Any] | None, binding: str) -> ModelConfig:
        """The config with gin `overrides` applied: compute fields freely, shape fields
        only when they equal the artifact's (else an error naming `binding` and both)."""
        overrides = dict(overrides or {})
        for key, value in overrides.items():
            if not hasattr(self.config, key):
                raise ArtifactError(f"{binding}: ModelConfig has no field {key!r}.")
            if key not in COMPUTE_FIELDS and getattr(self.config, key) != value:
                raise ArtifactError(
                    f"gin {binding}['{key}'] = {value!r} contradicts {self.where}: "
                    f"{key} = {getattr(self.config, key)!r}. The model's shape comes from its "
                    f"artifact; only {COMPUTE_FIELDS} may be overridden."
                )
        return self.config.replace(**overrides) if overrides else self.config

    def layout_for(
        self,
        task: str | None,
        scope: str,
        **gin_fields: Any,
    ) -> InputLayout:
        """The input layout readers use: the artifact's, or for a raw HF checkpoint the
        task's default (BOS as its tokenizer expects). `gin_fields` (InputLayout field ->
        gin value, None = unset) must agree with the artifact's layout; for a raw
        checkpoint they replace the defaults. Errors name the binding "<scope>.<field>"
        (the gin parameters that restate a layout are named as its fields)."""
        given = {k: v for k, v in gin_fields.items() if v is not None}
        if self.layout is None:
            if task is None:
                raise ArtifactError(
                    f"{self.directory} has no input layout (a raw Hugging Face checkpoint) "
                    "and no task was given to take the default from."
                )
            return task_layout(task, **{"add_bos": bool(self.tokenizer.get("adds_bos")), **given})
        for key, value in given.items():
            ours = getattr(self.layout, key)
            if ours != value:
                raise ArtifactError(
                    f"gin {scope}.{key} = {value!r} contradicts {self.where}: layout.{key} = "
                    f"{ours!r}. Readers take the layout the model was trained with; unset the "
                    "binding (or retrain the model with it)."
                )
        return self.layout


def resolve_model_dir(workdir: str | None, ref: str, binding: str) -> str:
    """A model reference from gin: a stage dir under WORKDIR ('sft', 'rm_ai') or a path."""
    relative = not (os.path.isabs(ref) or fs.is_uri(ref))
    if workdir and relative and fs.isdir(os.path.join(workdir, ref)):
        return os.path.join(workdir, ref)
    if fs.isdir(ref):
        return ref
    looked = [os.path.join(workdir, ref)] if workdir and relative else []
    raise ArtifactError(
        f"gin {binding} = {ref!r}: no such model directory (looked in {looked + [ref]}). "
        "Give a stage output under the workdir or a Hugging Face checkpoint directory."
    )


def _read_json(path: str) -> dict:
    try:
        return json.loads(fs.read_text(path))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e


def _config_from(fields: Mapping[str, Any], where: str) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ArtifactError(f"{where}: config has unknown fields {unknown}.")
    try:
        return ModelConfig(**fields)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: config: {e}") from e


def _open_rlaif(directory: str) -> ModelArtifact:
    where = os.path.join(directory, MODEL_FILE)
    meta = _read_json(where)
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{where}: format {meta.get('format')!r}, expected {FORMAT!r}.")
    for field in ("config", "head", "family", "tokenizer", "layout"):
        if field not in meta:
            raise ArtifactError(f"{where}: missing field {field!r}.")
    if meta["head"] not in HEADS:
        raise ArtifactError(f"{where}: head {meta['head']!r} is not one of {HEADS}.")
    layout = InputLayout.from_dict(meta["layout"], where=f"{where}: layout")
    vocab = tokenizer_files.load_tokenizer(directory, meta["tokenizer"], where=where)
    return ModelArtifact(
        directory=directory,
        kind="rlaif",
        config=_config_from(meta["config"], where),
        head=meta["head"],
        family=meta["family"],
        tokenizer=meta["tokenizer"],
        layout=layout,
        vocab=vocab,
        source=meta.get("source"),
    )


def _open_hf(directory: str) -> ModelArtifact:
    from rlaif_jax.data.hf_tokenizer import HFTokenizerVocabulary
    from rlaif_jax.models.importers.hf import load_config

    family, config = load_config(directory)
    hf = _read_json(os.path.join(directory, "config.json"))
    arch = (hf.get("architectures") or [""])[0]
    head = "scalar" if arch.endswith("ForSequenceClassification") else "lm"
    try:
        vocab = HFTokenizerVocabulary(directory)
    except FileNotFoundError as e:
        raise ArtifactError(
            f"{directory}: a Hugging Face checkpoint needs its tokenizer.json next to "
            f"config.json ({e})."
        ) from e
    if vocab.vocab_size > config.vocab_size:
        raise ArtifactError(
            f"{directory}: tokenizer.json has {vocab.vocab_size} tokens but config.json "
            f"vocab_size is {config.vocab_size}."
        )
    return ModelArtifact(
        directory=directory,
        kind="hf",
        config=config,
        head=head,
        family=family,
        tokenizer=tokenizer_files.describe(vocab),
        layout=None,
        vocab=vocab,
        source=fs.abspath(directory),
    )


def open_model(path: str) -> ModelArtifact:
    """Reads a model directory: ours (model.json) or a Hugging Face checkpoint."""
    if fs.isfile(os.path.join(path, MODEL_FILE)):
        return _open_rlaif(path)
    if fs.isfile(os.path.join(path, "config.json")):
        return _open_hf(path)
    raise ArtifactError(
        f"{path} is not a model directory: it has neither {MODEL_FILE} (a stage output) nor "
        "config.json (a Hugging Face checkpoint). Has the stage that writes it finished?"
    )


def write_model_artifact(
    directory: str,
    config: ModelConfig,
    head: str,
    vocab: Any,
    layout: InputLayout,
    family: str = DEFAULT_FAMILY,
    source: str | None = None,
) -> None:
    """Writes model.json and the tokenizer files into `directory` (host 0)."""
    if head not in HEADS:
        raise ValueError(f"head {head!r} is not one of {HEADS}.")
    spec = tokenizer_files.save_tokenizer(vocab, directory)
    if jax.process_index() != 0:
        return
    fields = dataclasses.asdict(config)
    fields["rope_scaling"] = config.rope_scaling_dict
    meta = {
        "format": FORMAT,
        "config": fields,
        "head": head,
        "family": family,
        "tokenizer": spec,
        "layout": layout.to_dict(),
        "source": source,
    }
    artifacts.atomic_write(
        os.path.join(directory, MODEL_FILE), json.dumps(meta, indent=1, sort_keys=True)
    )


@dataclasses.dataclass(frozen=True)
class StartingPoint:
    """Where a trained model starts: the source's architecture (with compute overrides),
    tokenizer and layout, and `init_params(mesh, rules) -> (params, shardings)` as the
    training loop takes it (`train.supervised.train_supervised`)."""

    config: ModelConfig
    vocab: Any
    family: str
    layout: InputLayout
    init_params: Any
    origin: str


def preset_config(name: str, overrides: Mapping[str, Any] | None, binding: str) -> ModelConfig:
    """`models.config.get_config(name, **overrides)` for a randomly initialised model; an
    unknown preset is an error naming the gin parameter `binding` (e.g. 'sft.model_preset')."""
    try:
        return get_config(name, **(overrides or {}))
    except ValueError as e:
        raise ValueError(f"gin {binding} = {name!r}: {e}") from e


def start_from(
    workdir: str,
    ref: str,
    binding: str,
    task: str,
    head: str,
    model_overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    **layout_fields: Any,
) -> StartingPoint:
    """The starting point of a stage that trains a `head` model from the model `ref` (a
    stage dir under WORKDIR or a Hugging Face checkpoint directory; `binding` names the
    gin parameter for errors). `layout_fields` (None = unset) as in `layout_for`."""
    source = open_model(resolve_model_dir(workdir, ref, binding))
    scope = binding.split("/")[-1].split(".")[0]
    config = source.config_with(model_overrides, f"{scope}.model_overrides")
    return StartingPoint(
        config=config,
        vocab=source.vocab,
        family=source.family,
        layout=source.layout_for(task, scope, **layout_fields),
        init_params=functools.partial(load_params, source, head=head, config=config, seed=seed),
        origin=source.source or fs.abspath(source.directory),
    )


def load_params(
    art: ModelArtifact,
    mesh: jax.sharding.Mesh,
    rules: Any,
    head: str | None = None,
    config: ModelConfig | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """(params, shardings) of `art` as a `head` model, born sharded on `mesh`.

    head: the role's head; an 'lm' artifact read as 'scalar' keeps its trunk and gets a
    fresh scalar head (seeded): a reward or value model from an LM. config: `art.config`
    with compute overrides (`ModelArtifact.config_with`).
    """
    from rlaif_jax.models import model as model_lib
    from rlaif_jax.sharding import model_params

    head = head or art.head
    config = config or art.config
    if art.head == "scalar" and head == "lm":
        raise ArtifactError(f"{art.where}: a scalar-head (reward) model cannot be read as an LM.")
    structs, shardings = model_params.abstract_params(config, mesh, rules, head)
    if art.head == head:
        return _read_params(art, structs, config, mesh, rules), shardings
    lm_structs, _ = model_params.abstract_params(config, mesh, rules, art.head)
    trunk = _read_params(art, lm_structs, config, mesh, rules)
    fresh, _ = model_params.init_params(config, jax.random.PRNGKey(seed), mesh, rules, head)
    return model_lib.lm_to_scalar_params(trunk, fresh), shardings


def _read_params(art: ModelArtifact, structs: Any, config: ModelConfig, mesh, rules) -> Any:
    if art.kind == "rlaif":
        from rlaif_jax.train.checkpoint import restore_params

        return restore_params(art.ckpt_dir, structs)
    from rlaif_jax.sharding.model_params import import_hf

    compute = {k: getattr(config, k) for k in COMPUTE_FIELDS}
    params, _ = import_hf(art.directory, mesh, rules, head=art.head, **compute)
    return params

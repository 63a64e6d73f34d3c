"""Record sources per (task, role, split) over the real-format readers, and seqio Tasks.

Roles (features from records.py):
  sft          {id, context, response}             TL;DR posts -> reference summaries;
                                                    HH context -> chosen response
  prompts      {id, context}                       RL / eval prompts
  human_prefs  preference pairs, human orientation RM on human labels (RLHF)
  unlabeled    the same pairs, order randomised     input of the label stage
  alignment    paper §3.5 subset, order randomised  labeler alignment
  ai_prefs     AI preference records                label-stage output (manifest shards)

Stages can iterate sources in plain Python (`iterate_records`, no TF), or use the
seqio Tasks `rlaif_{task}_{role}` that `register_tasks` adds (string/number features,
per-host sharding through `seqio.ShardInfo`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from rlaif_jax import fs
from rlaif_jax.data import formats, records, splits

Record = dict[str, Any]
Sources = dict[str, dict[str, "RecordSource"]]  # role -> split -> source

ROLE_FEATURES = {
    "sft": records.SFT_FEATURES,
    "prompts": records.PROMPT_FEATURES,
    "human_prefs": records.PAIR_FEATURES,
    "unlabeled": records.PAIR_FEATURES,
    "alignment": records.PAIR_FEATURES,
    "ai_prefs": records.AI_PREFERENCE_FEATURES,
}
# Our split names -> the `split` column of the OpenAI comparisons.
COMPARISON_SPLITS = {"train": "train", "validation": "valid1", "test": "valid2"}
_FLOAT_FEATURES = ("label", "p_order1", "p_order2", "human_label")
_INT_FEATURES = ("confidence",)


@dataclasses.dataclass(frozen=True)
class RecordSource:
    """A re-iterable stream of records: each iteration calls `fn()` afresh (files reread)."""

    name: str
    role: str
    fn: Callable[[], Iterable[Record]]

    @property
    def features(self) -> tuple[str, ...]:
        return ROLE_FEATURES[self.role]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.fn())


def iterate_records(
    source: RecordSource | Iterable[Record], shard_index: int = 0, num_shards: int = 1
) -> Iterator[Record]:
    """Records of `source`, only those with position i % num_shards == shard_index."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} not in [0, {num_shards})")
    for i, rec in enumerate(source):
        if i % num_shards == shard_index:
            yield rec


class _Lazy:
    """`fn(*args, **kwargs)` evaluated afresh on every iteration (a re-iterable stream)."""

    def __init__(self, fn: Callable[..., Iterable[Record]], *args: Any, **kwargs: Any):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self) -> Iterator[Record]:
        return iter(self.fn(*self.args, **self.kwargs))

    def __iter__(self) -> Iterator[Record]:
        return self()


def _files(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _read_all(reader: Callable[..., Iterable[Record]], paths: Sequence[str], **kw):
    for p in paths:
        yield from reader(p, **kw)


def _add_pair_roles(
    out: Sources, task: str, pairs: Mapping[str, _Lazy], seed: int, label_dir, kw
) -> None:
    """human_prefs, unlabeled (order randomised), alignment (train) and ai_prefs."""
    for split, human in pairs.items():
        out["human_prefs"][split] = RecordSource(
            f"{task}/human_prefs/{split}", "human_prefs", human
        )
        out["unlabeled"][split] = RecordSource(
            f"{task}/unlabeled/{split}", "unlabeled", _Lazy(splits.randomize_order, human, seed)
        )
    if "train" in pairs:
        subset = _Lazy(splits.alignment_subset, pairs["train"], task, seed)
        out["alignment"]["train"] = RecordSource(
            f"{task}/alignment/train", "alignment", _Lazy(splits.randomize_order, subset, seed)
        )
    if label_dir:
        out["ai_prefs"]["train"] = RecordSource(
            f"{task}/ai_prefs/train",
            "ai_prefs",
            _Lazy(formats.read_ai_preferences, label_dir, **kw),
        )


def summarize_sources(
    tldr_files: Mapping[str, str | Sequence[str]],
    comparison_files: str | Sequence[str],
    comparison_splits: Mapping[str, str] | None = None,
    label_dir: str | None = None,
    seed: int = 0,
    skip_bad_records: bool = False,
) -> Sources:
    """Summarization sources: TL;DR {split: file(s)} and OpenAI comparisons file(s).

    Comparison files (JSON lines or parquet) are read whole and filtered by their
    `split` column: `comparison_splits` maps our split names to its values (default
    train -> 'train', validation -> 'valid1', test -> 'valid2'; every stage names the
    held-out split 'validation', whatever the file calls it). ai_prefs (train) come from the label
    stage's shards in `label_dir` when given.
    """
    kw = {"skip_bad_records": skip_bad_records}
    out: Sources = {r: {} for r in ROLE_FEATURES}
    for split, paths in tldr_files.items():
        for role in ("sft", "prompts"):
            fn = _Lazy(_read_all, formats.read_tldr, _files(paths), role=role, **kw)
            out[role][split] = RecordSource(f"summarize/{role}/{split}", role, fn)
    comp = _files(comparison_files)
    pairs = {
        ours: _Lazy(_read_all, formats.read_comparisons, comp, split=theirs, **kw)
        for ours, theirs in (comparison_splits or COMPARISON_SPLITS).items()
    }
    _add_pair_roles(out, "summarize", pairs, seed, label_dir, kw)
    return out


def hh_sources(
    subset: str,
    train_file: str | Sequence[str],
    test_file: str | Sequence[str] | None = None,
    label_dir: str | None = None,
    seed: int = 0,
    skip_bad_records: bool = False,
) -> Sources:
    """Anthropic HH helpful-base or harmless-base sources.

    Splits: train; the test file divided by (seed, id) into validation (2/3) and test
    (1/3) as in paper §3.3. human_prefs keep the chosen-first orientation (response1 is
    the more helpful / LESS harmful response, label 1.0); sft is context -> chosen
    response (the paper does not state its dialogue SFT data; this is the usual choice).
    """
    kw = {"skip_bad_records": skip_bad_records}
    out: Sources = {r: {} for r in ROLE_FEATURES}
    pairs = {"train": _Lazy(_read_all, formats.read_hh, _files(train_file), subset=subset, **kw)}
    if test_file is not None:
        test = _Lazy(_read_all, formats.read_hh, _files(test_file), subset=subset, **kw)
        for which in ("validation", "test"):
            pairs[which] = _Lazy(splits.hh_eval_split, test, which, seed)
    for split, fn in pairs.items():
        for role in ("prompts", "sft"):
            out[role][split] = RecordSource(
                f"{subset}/{role}/{split}", role, _Lazy(_project, fn, role)
            )
    _add_pair_roles(out, subset, pairs, seed, label_dir, kw)
    return out


def _project(pairs: Iterable[Record], role: str) -> Iterator[Record]:
    """Human-oriented HH pairs -> prompts {id, context} or SFT {id, context, response=chosen}."""
    for rec in pairs:
        if role == "prompts":
            yield {"id": rec["id"], "context": rec["context"]}
        else:
            yield {"id": rec["id"], "context": rec["context"], "response": rec["response1"]}


def task_name(task: str, role: str) -> str:
    return f"rlaif_{task}_{role}"


def _dataset_fn(role: str, by_split: Mapping[str, RecordSource]):
    """seqio dataset_fn(split, shuffle_files, seed) over a role's sources."""
    import tensorflow as tf

    features = ROLE_FEATURES[role]

    def spec(name):
        if name in _FLOAT_FEATURES:
            return tf.TensorSpec((), tf.float32)
        if name in _INT_FEATURES:
            return tf.TensorSpec((), tf.int32)
        return tf.TensorSpec((), tf.string)

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        del shuffle_files, seed  # order is the files' order; shuffling is the consumer's job
        source = by_split[split]

        def gen():
            for rec in source:
                yield {k: rec[k] for k in features}

        return tf.data.Dataset.from_generator(gen, output_signature={k: spec(k) for k in features})

    return dataset_fn


@dataclasses.dataclass(frozen=True)
class TaskSources:
    """The sources of one task (summarize / helpful / harmless), by role and split."""

    task: str
    sources: Sources

    def __post_init__(self):
        if self.task not in records.TASKS:
            raise ValueError(f"Unknown task {self.task!r}; expected one of {records.TASKS}")

    def source(self, role: str, split: str) -> RecordSource:
        by_split = self.sources.get(role) or {}
        if split not in by_split:
            raise KeyError(
                f"Task {self.task!r} has no {role!r} data for split {split!r}; it has "
                f"{sorted(by_split) or 'none'} (roles with data: "
                f"{sorted(r for r, v in self.sources.items() if v)})."
            )
        return by_split[split]

    def with_ai_labels(self, label_dir: str, skip_bad_records: bool = False) -> TaskSources:
        """A copy whose ai_prefs/train reads the label stage's shards in `label_dir`."""
        sources = {r: dict(v) for r, v in self.sources.items()}
        kw = {"skip_bad_records": skip_bad_records}
        sources["ai_prefs"] = {
            "train": RecordSource(
                f"{self.task}/ai_prefs/train",
                "ai_prefs",
                _Lazy(formats.read_ai_preferences, label_dir, **kw),
            )
        }
        return TaskSources(self.task, sources)

    def with_policy_pairs(
        self,
        pairs_dir: str,
        pair_splits: Sequence[str] = ("train",),
        alignment_fraction: float | None = None,
        max_alignment: int | None = None,
        seed: int = 0,
        alignment: bool = True,
    ) -> TaskSources:
        """A copy whose unlabeled pairs of `pair_splits` are the policy-sampled pairs in
        PAIRS_DIR/<split>.jsonl (`pair_sampling`). Rated pairs (every record has a
        confidence 1..9, e.g. from the toy world's simulated human) also replace
        human_prefs of that split, and the train split's alignment subset is redrawn from
        them (`splits.alignment_subset`, at most `max_alignment`). alignment False: the
        copy has no alignment subset at all (the label stage then labels the pairs only,
        e.g. the RLHF + RLAIF arm's new pairs, whose labeler the main label step measures)."""
        sources = {r: dict(v) for r, v in self.sources.items()}
        for split in pair_splits:
            path = os.path.join(pairs_dir, f"{split}.jsonl")
            if not fs.isfile(path):
                raise FileNotFoundError(
                    f"No policy-sampled pairs at {path} (PolicyPairs.pairs_dir): "
                    "run `rlaif-jax sample_pairs` first (pipeline step ('sample_pairs', "
                    "'sample_pairs', 'policy_pairs'))."
                )
            pairs = list(formats.read_policy_pairs(path))
            if not pairs:
                raise ValueError(f"{path} holds no pairs: rerun `rlaif-jax sample_pairs`.")
            name = f"{self.task}/policy_pairs/{split}"
            sources.setdefault("unlabeled", {})[split] = RecordSource(
                name, "unlabeled", lambda p=pairs: p
            )
            if all(r["confidence"] != 0 for r in pairs):
                sources.setdefault("human_prefs", {})[split] = RecordSource(
                    name, "human_prefs", lambda p=pairs: p
                )
                if split == "train":
                    subset = list(
                        splits.alignment_subset(pairs, self.task, seed, alignment_fraction)
                    )[: max_alignment or None]
                    sources.setdefault("alignment", {})["train"] = RecordSource(
                        f"{name}/alignment", "alignment", lambda s=subset: s
                    )
        if not alignment:
            sources["alignment"] = {}
        return TaskSources(self.task, sources)


@dataclasses.dataclass(frozen=True)
class PolicyPairs:
    """Where the label and reward stages read policy-sampled pairs (the `sample_pairs`
    stage's WORKDIR/<pairs_dir>) instead of the task's own unlabeled pairs; pairs_dir
    None: the task's own. `splits`, `alignment_fraction`, `max_alignment`, `seed`,
    `alignment`: see `TaskSources.with_policy_pairs`."""

    pairs_dir: str | None = None
    splits: Sequence[str] = ("train",)
    alignment_fraction: float | None = None
    max_alignment: int | None = None
    seed: int = 0
    alignment: bool = True

    def apply(self, data: TaskSources, workdir: str) -> TaskSources:
        """`data`, with the policy-sampled pairs of WORKDIR/<pairs_dir> when it is set."""
        if self.pairs_dir is None:
            return data
        return data.with_policy_pairs(
            os.path.join(workdir, self.pairs_dir),
            self.splits,
            self.alignment_fraction,
            self.max_alignment,
            self.seed,
            self.alignment,
        )


def task_sources(task: str, sources: Sources) -> TaskSources:
    """The task's sources: `sources` is e.g. `summarize_sources(...)` or `hh_sources(...)`
    (the task config files bind both arguments)."""
    return TaskSources(task, sources)


def need_data(data: TaskSources | None, stage: str) -> TaskSources:
    """`data`, or an error saying where a stage called without its task's data gets it."""
    if data is None:
        raise ValueError(
            f"{stage} reads the task's data and was given none: from Python pass "
            "data=tasks.task_sources(task, sources); from the command line name a task "
            "file (tasks/summarize, tasks/helpful, tasks/harmless or tasks/toy)."
        )
    return data


def register_tasks(data: TaskSources) -> list[str]:
    """Registers (replacing any earlier registration) one seqio Task per role with data.

    Returns the task names
    `rlaif_{task}_{role}`. Features are untokenized strings and numbers named as in
    records.py; each stage tokenizes with its own vocabulary. Pass
    `shard_info=seqio.ShardInfo(jax.process_index(), jax.process_count())` to
    `get_dataset` for per-host sharding (record i goes to host i % count).
    """
    import seqio

    names = []
    for role, by_split in data.sources.items():
        if not by_split:
            continue
        name = task_name(data.task, role)
        if name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name,
            source=seqio.FunctionDataSource(
                _dataset_fn(role, by_split), splits=tuple(by_split), caching_permitted=False
            ),
            output_features={},
        )
        names.append(name)
    return names


def task_records(
    name: str, split: str, shard_index: int = 0, num_shards: int = 1
) -> Iterator[Record]:
    """Records from a registered seqio Task as Python dicts (strings decoded)."""
    import seqio

    ds = seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=None,
        split=split,
        shuffle=False,
        shard_info=seqio.ShardInfo(shard_index, num_shards) if num_shards > 1 else None,
    )
    for ex in ds.as_numpy_iterator():
        yield {k: v.decode("utf-8") if isinstance(v, bytes) else v.item() for k, v in ex.items()}

"""Readers for the real data formats (DESIGN §8), each a generator of records.py dicts.

- TL;DR filtered (Stiennon et al.): JSONL `{id, subreddit, title, post, summary}` ->
  SFT examples and RL prompts (`read_tldr`).
- OpenAI comparisons (`summarize_from_feedback`): JSON lines or parquet with columns
  `{info, summaries, choice, worker, batch, split, extra}` -> preference pairs
  (`read_comparisons`).
- Anthropic HH-RLHF helpful-base / harmless-base `.jsonl.gz` `{chosen, rejected}` ->
  preference pairs (`read_hh`).
- AI preferences written by the label stage: JSONL shards listed in `manifest.json`
  (`read_ai_preferences`).
- Policy-sampled pairs written by the sample_pairs stage: JSONL `{id, context,
  response1, response2[, label, confidence]}` (`read_policy_pairs`).
- TFDS datasets by name (`read_tfds`).

Bad input raises `RecordError` naming file, line (or parquet row) and field; with
`skip_bad_records=True` the record is skipped and counted in a `ReadStats`. Rows are read
and their fields checked by `record_io`; each reader here maps one format's fields to
records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from rlaif_jax import fs
from rlaif_jax.data import records
from rlaif_jax.data.record_io import (
    ReadStats,
    Record,
    RecordError,
    get_field,
    get_text,
    parse_rows,
)

# Orientation of HH pairs as read: response1 is always the human-chosen response, so
# label == 1.0 means "response1 preferred". For helpful-base the chosen response is the
# MORE helpful one; for harmless-base it is the LESS harmful one (the labeler asks "which
# is more harmful" and must invert its own answer, not ours).
HH_CHOSEN_MEANS = {"helpful": "more helpful", "harmless": "less harmful"}
ASSISTANT_TAG = "\n\nAssistant:"


def format_tldr_context(subreddit: str, title: str, post: str) -> str:
    """The summarization context shown to models (as in the paper's prompts)."""
    return f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}"


def read_tldr(
    path: str,
    role: str = "sft",
    skip_bad_records: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Record]:
    """TL;DR filtered JSONL -> SFT examples (role 'sft') or prompts (role 'prompts').

    SFT: {id, context, response=summary}; prompts: {id, context}.
    """
    if role not in ("sft", "prompts"):
        raise ValueError(f"read_tldr role must be 'sft' or 'prompts', got {role!r}")

    def parse(obj, where):
        rid = str(get_field(obj, "id", path, where))
        context = format_tldr_context(
            get_text(obj, "subreddit", path, where),
            get_text(obj, "title", path, where),
            get_text(obj, "post", path, where),
        )
        if role == "prompts":
            return {"id": rid, "context": context}
        return {"id": rid, "context": context, "response": get_text(obj, "summary", path, where)}

    return parse_rows(path, parse, skip_bad_records, stats)


def read_comparisons(
    path: str,
    split: str | None = None,
    skip_bad_records: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Record]:
    """OpenAI comparisons (JSON lines, .gz, or .parquet) -> preference pairs.

    response1/2 = summaries[0/1].text; label = 1.0 if choice == 0 else 0.0 (i.e.
    P(response1 preferred)); confidence = extra.confidence (1..9), 0 when missing.
    `split` keeps only rows whose `split` column equals it (train, valid1, valid2).
    Several comparisons of one post share `info.id`, so the pair id adds the row.
    """

    def parse(obj, where):
        row_split = obj.get("split")
        if split is not None and row_split != split:
            return None
        info = get_field(obj, "info", path, where)
        # CNN/DM rows in the validation data have an article instead of a post.
        post = info.get("post") if isinstance(info, Mapping) else None
        if post is None and isinstance(info, Mapping) and info.get("article") is not None:
            post = info["article"]
            context = format_tldr_context(
                info.get("site") or "cnndm", info.get("title") or "", post
            )
        else:
            context = format_tldr_context(
                get_text(obj, "info.subreddit", path, where),
                get_text(obj, "info.title", path, where),
                get_text(obj, "info.post", path, where),
            )
        summaries = get_field(obj, "summaries", path, where)
        if not isinstance(summaries, list | tuple) or len(summaries) != 2:
            raise RecordError(path, where, "summaries", "expected a list of exactly 2")
        r1, r2 = (get_text(obj, f"summaries.{i}.text", path, where) for i in (0, 1))
        choice = get_field(obj, "choice", path, where)
        if choice not in (0, 1) or isinstance(choice, bool):
            raise RecordError(path, where, "choice", f"expected 0 or 1, got {choice!r}")
        extra = obj.get("extra") or {}
        confidence = extra.get("confidence") if isinstance(extra, Mapping) else None
        if confidence is None:
            confidence = 0
        elif not isinstance(confidence, int) or not 1 <= confidence <= 9:
            raise RecordError(path, where, "extra.confidence", f"expected 1..9, got {confidence!r}")
        return {
            "id": f"{get_field(obj, 'info.id', path, where)}:{row_split}:{where.split()[-1]}",
            "context": context,
            "response1": r1,
            "response2": r2,
            "label": 1.0 if choice == 0 else 0.0,
            "confidence": int(confidence),
        }

    return parse_rows(path, parse, skip_bad_records, stats)


def read_policy_pairs(
    path: str, skip_bad_records: bool = False, stats: ReadStats | None = None
) -> Iterator[Record]:
    """Pairs sampled from a policy (`pair_sampling`): JSONL {id, context, response1,
    response2} plus, when the pairs were rated, label (P(response1 preferred), 0..1) and
    confidence (1..9). Unrated pairs get label −1.0 and confidence 0 (no human label, as
    `labeling.labeler.human_label` reads it), so they never enter alignment metrics."""

    def parse(obj, where):
        rec = {"id": str(get_field(obj, "id", path, where))}
        for name in ("context", "response1", "response2"):
            rec[name] = get_text(obj, name, path, where)
        label, confidence = obj.get("label"), obj.get("confidence")
        if label is None and confidence is None:
            rec["label"], rec["confidence"] = -1.0, 0
            return rec
        if isinstance(label, bool) or not isinstance(label, int | float) or not 0 <= label <= 1:
            raise RecordError(path, where, "label", f"expected a number in [0, 1], got {label!r}")
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, int)
            or not 1 <= confidence <= 9
        ):
            raise RecordError(path, where, "confidence", f"expected 1..9, got {confidence!r}")
        rec["label"], rec["confidence"] = float(label), confidence
        return rec

    return parse_rows(path, parse, skip_bad_records, stats)


def split_hh_transcript(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """(context, chosen response, rejected response), or None if the prefixes differ.

    The context is the shared transcript up to and including the last "\\n\\nAssistant:"
    of `chosen`; `rejected` must start with the same context.
    """
    cut = chosen.rfind(ASSISTANT_TAG)
    if cut < 0:
        return None
    context = chosen[: cut + len(ASSISTANT_TAG)]
    if not rejected.startswith(context):
        return None
    return context, chosen[len(context) :].strip(), rejected[len(context) :].strip()


def read_hh(
    path: str,
    subset: str,
    skip_bad_records: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Record]:
    """Anthropic HH-RLHF `{chosen, rejected}` rows -> preference pairs.

    response1 = chosen, response2 = rejected, label = 1.0, confidence = 0. Orientation:
    chosen is the preferred response for both subsets, so for `subset='harmless'`
    response1 is the LESS harmful response (see `HH_CHOSEN_MEANS`). Pair order is not
    randomised here; `splits.randomize_order` does that for labeling.
    """
    if subset not in HH_CHOSEN_MEANS:
        raise ValueError(f"HH subset must be one of {sorted(HH_CHOSEN_MEANS)}, got {subset!r}")
    base = os.path.basename(path)

    def parse(obj, where):
        chosen = get_text(obj, "chosen", path, where)
        rejected = get_text(obj, "rejected", path, where)
        parts = split_hh_transcript(chosen, rejected)
        if parts is None:
            raise RecordError(
                path,
                where,
                "rejected",
                'chosen and rejected do not share the transcript up to the last "Assistant:"',
            )
        context, r1, r2 = parts
        if not r1:
            raise RecordError(path, where, "chosen", "empty response after the last Assistant:")
        if not r2:
            raise RecordError(path, where, "rejected", "empty response after the last Assistant:")
        return {
            "id": f"{subset}:{base}:{where.split()[-1]}",
            "context": context,
            "response1": r1,
            "response2": r2,
            "label": 1.0,
            "confidence": 0,
        }

    return parse_rows(path, parse, skip_bad_records, stats)


def read_manifest(label_dir: str) -> list[str]:
    """Absolute paths of the finished shards listed in `label_dir/manifest.json`.

    Accepts {"shards": [name | {"file"|"path"|"name": name, ...}, ...]} or a bare list;
    names are relative to `label_dir`. A missing manifest means no finished shards.
    """
    manifest = os.path.join(label_dir, "manifest.json")
    if not fs.exists(manifest):
        return []
    try:
        data = json.loads(fs.read_text(manifest))
    except json.JSONDecodeError as e:
        raise RecordError(manifest, f"line {e.lineno}", "<json>", e.msg) from e
    entries = data.get("shards") if isinstance(data, Mapping) else data
    if not isinstance(entries, list):
        raise RecordError(manifest, "line 1", "shards", "expected a list of shard files")
    out = []
    for i, entry in enumerate(entries):
        name = entry
        if isinstance(entry, Mapping):
            name = entry.get("file") or entry.get("path") or entry.get("name")
        if not isinstance(name, str) or not name:
            raise RecordError(manifest, f"shards[{i}]", "file", "expected a shard file name")
        absolute = os.path.isabs(name) or fs.is_uri(name)
        out.append(name if absolute else os.path.join(label_dir, name))
    return out


def read_ai_preferences(
    label_dir: str, skip_bad_records: bool = False, stats: ReadStats | None = None
) -> Iterator[Record]:
    """AI preference records from the finished shards the manifest lists (in its order)."""
    floats = ("label", "p_order1", "p_order2", "human_label")
    for shard in read_manifest(label_dir):

        def parse(obj, where, shard=shard):
            rec = {}
            for name in records.AI_PREFERENCE_FEATURES:
                value = get_field(obj, name, shard, where)
                if name in floats:
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        raise RecordError(shard, where, name, f"expected a number, got {value!r}")
                    value = float(value)
                elif name == "confidence":
                    value = int(value)
                elif name in ("context", "response1", "response2"):
                    value = get_text(obj, name, shard, where)
                else:
                    value = str(value)
                rec[name] = value
            return rec

        yield from parse_rows(shard, parse, skip_bad_records, stats)


def read_tfds(
    name: str,
    split: str,
    fields: Mapping[str, str],
    data_dir: str | None = None,
    constants: Mapping[str, Any] | None = None,
) -> Iterator[Record]:
    """A TFDS dataset by name -> records, mapping record fields to TFDS feature keys.

    `fields` maps a records.py field (e.g. "context") to a TFDS feature key (nested keys
    dotted, e.g. "info.post"); bytes are decoded as UTF-8. `constants` fills fields the
    dataset lacks (e.g. {"confidence": 0}). Nothing is downloaded: the dataset must
    already be prepared in `data_dir`.
    """
    import tensorflow_datasets as tfds

    ds = tfds.load(name, split=split, data_dir=data_dir, download=False)
    for i, ex in enumerate(tfds.as_numpy(ds)):
        rec = dict(constants or {})
        for field, key in fields.items():
            value = get_field(ex, key, f"tfds:{name}/{split}", f"example {i}")
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            elif hasattr(value, "item"):
                value = value.item()
            rec[field] = value
        if "id" not in rec:
            rec["id"] = f"{name}:{split}:{i}"
        yield rec

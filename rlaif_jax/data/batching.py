"""Tokenize, truncate and right-pad records to fixed shapes; a resumable epoch iterator.

Shapes: B batch (this process's rows), L length. Token arrays are int32, right-padded
with `vocab.pad_id`. Over-long text is truncated and counted in `TruncationStats`.
With `add_bos=True` (model families trained with a BOS, e.g. Llama, Gemma) every row
starts with exactly one `vocab.bos_id`, counted inside the context budget.

Multi-host: the data is cut into `num_data_shards` fixed shards (record i goes to shard
i % S). Process p of P owns the contiguous shards [p*S/P, (p+1)*S/P) and reads only
those; global batch b takes G/S rows from each shard in shard order, so process p's
rows are exactly `partition.process_slice(G)` and the global batch is the same whatever
the number of processes (for a fixed S). `partition.global_batch(local, mesh)` then
builds the global arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rlaif_jax.data.vocab import Vocab

Record = dict[str, Any]


@dataclasses.dataclass
class TruncationStats:
    """How many examples had their context or response cut to fit."""

    examples: int = 0
    truncated_context: int = 0
    truncated_response: int = 0

    @property
    def truncated(self) -> int:
        return self.truncated_context + self.truncated_response


def _truncate_context(ids: list[int], budget: int, mode: str) -> list[int]:
    """Cut `ids` to `budget` tokens. 'left' keeps the end (next to the response); 'middle'
    keeps the first quarter (subreddit/title, the dialogue's start) and the end."""
    if len(ids) <= budget:
        return ids
    if budget <= 0:
        return []
    if mode == "left":
        return ids[len(ids) - budget :]
    if mode == "middle":
        head = budget // 4
        return ids[:head] + ids[len(ids) - (budget - head) :]
    raise ValueError(f"context truncation must be 'left' or 'middle', got {mode!r}")


def _bos(vocab: Vocab, add_bos: bool) -> list[int]:
    """[vocab.bos_id] when `add_bos` (families such as Llama and Gemma expect it), else []."""
    if not add_bos:
        return []
    bos = getattr(vocab, "bos_id", None)
    if bos is None or int(bos) < 0:
        raise ValueError(
            f"add_bos=True but the vocabulary {type(vocab).__name__} has no bos_id "
            f"(got {bos!r}); set add_bos=False or use a vocabulary with a BOS token"
        )
    return [int(bos)]


def _encode_context(
    vocab: Vocab,
    context: str,
    prompt_suffix: str,
    max_context: int,
    mode: str,
    add_bos: bool = False,
) -> tuple[list[int], bool]:
    """[BOS] then context tokens then prompt-suffix tokens, at most `max_context`; the BOS
    (with `add_bos`) and the suffix always survive, the context is cut to make room."""
    bos = _bos(vocab, add_bos)
    sfx = list(vocab.encode(prompt_suffix)) if prompt_suffix else []
    if len(bos) + len(sfx) >= max_context:
        raise ValueError(
            f"prompt_suffix {prompt_suffix!r} is {len(sfx)} tokens (+{len(bos)} BOS), which "
            f"leaves no room in max_context={max_context}"
        )
    ctx = list(vocab.encode(context))
    if bos:
        # Exactly one BOS: a context rendered by a chat template may already start with
        # the BOS text (e.g. "<|begin_of_text|>"); drop it so truncation cannot cut it.
        start = 0
        while start < len(ctx) and ctx[start] == bos[0]:
            start += 1
        ctx = ctx[start:]
    cut = _truncate_context(ctx, max_context - len(sfx) - len(bos), mode)
    return bos + cut + sfx, len(cut) < len(ctx)


def _encode_response(vocab: Vocab, text: str, max_response: int) -> tuple[list[int], bool]:
    """Response tokens then the primary EOS `vocab.eos_id` (when the vocabulary has one),
    at most `max_response`. Samplers stop on every id of `data.vocab.stop_ids(vocab)`."""
    ids = list(vocab.encode(text))
    eos = [] if vocab.eos_id is None or vocab.eos_id < 0 else [int(vocab.eos_id)]
    room = max_response - len(eos)
    return ids[:room] + eos, len(ids) > room


def _pad(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> np.ndarray:
    out = np.full((len(rows), length), pad_id, dtype=np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def sft_batch(
    records: Sequence[Record],
    vocab: Vocab,
    max_context: int,
    max_response: int,
    prompt_suffix: str = "",
    context_truncation: str = "middle",
    stats: TruncationStats | None = None,
    *,
    add_bos: bool = False,
) -> dict[str, np.ndarray]:
    """SFT examples {context, response} -> decoder-only batch, L = max_context +
    max_response.

    tokens [B, L] int32: context (+ prompt_suffix) tokens, response tokens, EOS, padding.
    loss_mask [B, L] float32: 1 where tokens[b, t] is a response token or the EOS (the
    model predicts tokens[:, t] from tokens[:, :t], so pair it with logits[:, t-1]).
    attention_mask [B, L] int32: 1 on real tokens.
    The context is cut (middle by default) so the response survives; a response longer
    than max_response - 1 is cut on the right. Both are counted in `stats`. `add_bos`:
    tokens[:, 0] = vocab.bos_id (inside max_context; loss_mask 0 there).
    """
    rows, masks = [], []
    for rec in records:
        ctx, cut_c = _encode_context(
            vocab, rec["context"], prompt_suffix, max_context, context_truncation, add_bos
        )
        resp, cut_r = _encode_response(vocab, rec["response"], max_response)
        rows.append(ctx + resp)
        masks.append((len(ctx), len(ctx) + len(resp)))
        if stats is not None:
            stats.examples += 1
            stats.truncated_context += int(cut_c)
            stats.truncated_response += int(cut_r)
    length = max_context + max_response
    tokens = _pad(rows, length, vocab.pad_id)
    pos = np.arange(length)[None, :]
    starts = np.array([m[0] for m in masks], dtype=np.int32)[:, None]
    ends = np.array([m[1] for m in masks], dtype=np.int32)[:, None]
    return {
        "tokens": tokens,
        "loss_mask": ((pos >= starts) & (pos < ends)).astype(np.float32),
        "attention_mask": (pos < ends).astype(np.int32),
    }


def prompt_batch(
    records: Sequence[Record],
    vocab: Vocab,
    max_context: int,
    prompt_suffix: str = "",
    context_truncation: str = "middle",
    stats: TruncationStats | None = None,
    *,
    add_bos: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Prompts -> (tokens [B, max_context] int32 right-padded, lengths [B] int32).

    Each prompt is its context, cut to fit, then `prompt_suffix` (e.g. "\\nTL;DR:"), no
    EOS; with `add_bos`, a BOS first (lengths include it).
    """
    rows = []
    for rec in records:
        ids, cut = _encode_context(
            vocab, rec["context"], prompt_suffix, max_context, context_truncation, add_bos
        )
        rows.append(ids)
        if stats is not None:
            stats.examples += 1
            stats.truncated_context += int(cut)
    return _pad(rows, max_context, vocab.pad_id), np.array([len(r) for r in rows], dtype=np.int32)


def pair_batch(
    records: Sequence[Record],
    vocab: Vocab,
    max_context: int,
    max_response: int,
    prompt_suffix: str = "",
    context_truncation: str = "middle",
    stats: TruncationStats | None = None,
    *,
    add_bos: bool = False,
) -> dict[str, np.ndarray]:
    """Preference pairs -> RM batch, L = max_context + max_response.

    tokens1/tokens2 [B, L] int32: the same (cut) context + prompt_suffix, then response1 or
    response2 + EOS, right-padded; lengths1/lengths2 [B] int32 (the RM reads position
    length - 1); label [B] float32 = P(response1 preferred). `add_bos`: both rows
    start with vocab.bos_id (inside max_context).
    """
    out: dict[str, list] = {"tokens1": [], "tokens2": [], "lengths1": [], "lengths2": []}
    labels = []
    for rec in records:
        ctx, cut_c = _encode_context(
            vocab, rec["context"], prompt_suffix, max_context, context_truncation, add_bos
        )
        cut_r = False
        for i in (1, 2):
            resp, cut = _encode_response(vocab, rec[f"response{i}"], max_response)
            cut_r |= cut
            out[f"tokens{i}"].append(ctx + resp)
            out[f"lengths{i}"].append(len(ctx) + len(resp))
        labels.append(float(rec["label"]))
        if stats is not None:
            stats.examples += 1
            stats.truncated_context += int(cut_c)
            stats.truncated_response += int(cut_r)
    length = max_context + max_response
    return {
        "tokens1": _pad(out["tokens1"], length, vocab.pad_id),
        "lengths1": np.array(out["lengths1"], dtype=np.int32),
        "tokens2": _pad(out["tokens2"], length, vocab.pad_id),
        "lengths2": np.array(out["lengths2"], dtype=np.int32),
        "label": np.array(labels, dtype=np.float32),
    }


def owned_shards(num_data_shards: int) -> range:
    """The data shards this process reads: a contiguous block of S / process_count."""
    import jax

    n, p = jax.process_count(), jax.process_index()
    if num_data_shards % n:
        raise ValueError(f"num_data_shards={num_data_shards} is not divisible by {n} processes")
    per = num_data_shards // n
    return range(p * per, (p + 1) * per)


def read_local_shards(records: Iterable[Record], num_data_shards: int) -> dict[int, list[Record]]:
    """Keeps this process's shards of a record stream (record i -> shard i % S)."""
    mine = owned_shards(num_data_shards)
    shards: dict[int, list[Record]] = {k: [] for k in mine}
    for i, rec in enumerate(records):
        k = i % num_data_shards
        if k in shards:
            shards[k].append(rec)
    return shards


@dataclasses.dataclass(frozen=True)
class DataState:
    """Position of an EpochIterator: the next batch is step `step` of epoch `epoch`."""

    epoch: int = 0
    step: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataState:
        return cls(epoch=int(d["epoch"]), step=int(d["step"]))


class EpochIterator:
    """Deterministically shuffled epochs over sharded records, resumable at any step.

    `shards` maps each owned shard index (see `owned_shards`) to its records. Each epoch
    permutes every shard with (seed, epoch, shard); global batch `step` takes rows
    [step*m, (step+1)*m) of each permuted shard (m = G / S), and this process yields the
    concatenation over its shards in shard order: its `process_slice(G)` of the global
    batch, as a list of records or `batch_fn(list)`. Steps per epoch = (smallest shard
    over all processes) // m; the tail of larger shards is dropped that epoch.
    """

    def __init__(
        self,
        shards: Mapping[int, Sequence[Record]],
        num_data_shards: int,
        global_batch_size: int,
        seed: int,
        state: DataState | None = None,
        batch_fn: Callable[[list[Record]], Any] | None = None,
        num_epochs: int | None = None,
    ):
        if global_batch_size % num_data_shards:
            raise ValueError(
                f"global_batch_size={global_batch_size} is not divisible by "
                f"num_data_shards={num_data_shards}"
            )
        self.shards = {k: list(v) for k, v in sorted(shards.items())}
        self.num_data_shards, self.global_batch_size, self.seed = (
            num_data_shards,
            global_batch_size,
            seed,
        )
        self.rows_per_shard = global_batch_size // num_data_shards
        self.batch_fn, self.num_epochs = batch_fn, num_epochs
        self.state = state or DataState()
        self.steps_per_epoch = _global_min(min(len(v) for v in self.shards.values())) // (
            self.rows_per_shard
        )
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"Too little data: a shard has fewer than {self.rows_per_shard} records "
                f"(global batch {global_batch_size} over {num_data_shards} shards)."
            )
        self._perms: tuple[int, dict[int, np.ndarray]] | None = None

    def _permutations(self, epoch: int) -> dict[int, np.ndarray]:
        if self._perms is None or self._perms[0] != epoch:
            self._perms = (
                epoch,
                {
                    k: np.random.default_rng([self.seed, epoch, k]).permutation(len(v))
                    for k, v in self.shards.items()
                },
            )
        return self._perms[1]

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        epoch, step = self.state.epoch, self.state.step
        if step >= self.steps_per_epoch:
            epoch, step = epoch + 1, 0
        if self.num_epochs is not None and epoch >= self.num_epochs:
            raise StopIteration
        perms, m = self._permutations(epoch), self.rows_per_shard
        local = [
            self.shards[k][i] for k in self.shards for i in perms[k][step * m : (step + 1) * m]
        ]
        self.state = DataState(epoch, step + 1)
        return self.batch_fn(local) if self.batch_fn else local


@dataclasses.dataclass(frozen=True)
class EpochSource:
    """Resumable epochs of local batches over a record list (a `train.supervised`
    BatchSource): this process keeps its shards once, then `iterator(position)` starts an
    `EpochIterator` at a saved position and `position(iterator)` reads it back.

    batch_fn(list of local records) -> the batch dict; num_data_shards 0: one per process.
    """

    shards: Mapping[int, Sequence[Record]]
    num_data_shards: int
    batch_size: int
    seed: int
    batch_fn: Callable[[list[Record]], Any] | None
    num_records: int
    num_epochs: int | None = None

    @classmethod
    def over(
        cls,
        records: Sequence[Record],
        batch_size: int,
        seed: int,
        batch_fn: Callable[[list[Record]], Any] | None = None,
        num_data_shards: int = 0,
        num_epochs: int | None = None,
    ) -> EpochSource:
        import jax

        num_shards = num_data_shards or jax.process_count()
        shards = read_local_shards(records, num_shards)
        return cls(shards, num_shards, batch_size, seed, batch_fn, len(records), num_epochs)

    def iterator(self, position: Mapping[str, Any] | None = None) -> EpochIterator:
        return EpochIterator(
            self.shards,
            self.num_data_shards,
            self.batch_size,
            self.seed,
            state=DataState.from_dict(position) if position else None,
            batch_fn=self.batch_fn,
            num_epochs=self.num_epochs,
        )

    @staticmethod
    def position(iterator: EpochIterator) -> dict[str, int]:
        return iterator.state.to_dict()


def _global_min(value: int) -> int:
    """min over processes (every process must call this at the same point)."""
    import jax

    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(np.min(multihost_utils.process_allgather(np.array(value, dtype=np.int64))))

"""The model-facing engine of the labeler: batched candidate scoring and rationale sampling.

`PromptScorer` is what `labeler.Labeler` and `direct.DirectScorer` need:

- `score(prefix [P], suffixes [B][L_b], candidate_ids [K]) -> [B, K]` full-vocabulary
  log-probs of each candidate at the position after `prefix + suffix_b` (not
  renormalised over K; `debias.renormalize` does that).
- `generate(prefix, suffixes, *, max_new_tokens, temperature, top_k, num_samples, rng)
  -> [B][S] token lists` continuations (EOS and padding removed).

`ModelScorer` implements it on a Flax LM checkpoint through `rlaif_jax.decoding`:
prompts bucketed by length, the shared prefix encoded once per batch, only last-position
logits, fixed batch shapes (padded) so each length bucket compiles once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import gin
import numpy as np

from rlaif_jax import model_artifact
from rlaif_jax.data.vocab import stop_ids
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.sharding.rules import Rules

if TYPE_CHECKING:
    from jax.sharding import Mesh


@runtime_checkable
class PromptScorer(Protocol):
    def score(
        self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], candidate_ids: Sequence[int]
    ) -> np.ndarray: ...

    def generate(
        self,
        prefix: Sequence[int],
        suffixes: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_k: int,
        num_samples: int,
        seed: int,
    ) -> list[list[list[int]]]: ...


def _pad_rows(rows: list[Sequence[int]], n: int) -> list[Sequence[int]]:
    """Pads a short final chunk with copies of its first row (their results are dropped)."""
    return list(rows) + [rows[0]] * (n - len(rows))


def _right_pad(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> np.ndarray:
    out = np.full((len(rows), length), pad_id, dtype=np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def prompts_per_generate_call(batch_size: int, num_samples: int, divisor: int) -> int:
    """Prompts in one `ModelScorer.generate` call: batch_size // num_samples (each prompt
    is sampled num_samples times), rounded up to a multiple of `divisor` (the batch
    divisor of the devices the call spans, `partition.batch_size_divisor`) so the prompts
    shard over them: at least one prompt per device."""
    per_call = max(batch_size // num_samples, 1)
    return -(-per_call // divisor) * divisor


class ModelScorer:
    """`PromptScorer` over a Flax LM (`models.model`, head 'lm') via `rlaif_jax.decoding`.

    config/params: the labeler model; params already placed with the mesh's shardings.
    mesh/rules: where it runs (the label stage uses this host's devices).
    batch_size: prompts per device call (a multiple of the mesh's batch divisor); both
      orders of a pair share a call because `Labeler` passes them together and prompts
      are sorted by length before chunking. `generate` samples num_samples rows per
      prompt, so it takes `prompts_per_generate_call` prompts per call.
    shared_prefix: encode the shared prefix once per call
      (`score.candidate_distribution_shared_prefix`) instead of once per prompt.
    length_buckets: each call's rows (sorted by length) are padded to the power-of-two
      bucket of its longest row (`labeling.tokens.length_bucket`), so a bucket compiles
      once; False pads every call to the whole window (max_len), the same scores and
      samples at the padded cost (`rlaif-jax bench --workload eval_label_buckets`).
    """

    def __init__(
        self,
        config: Any,
        params: Any,
        mesh: Any,
        rules: Any,
        *,
        batch_size: int = 32,
        max_len: int = 1024,
        shared_prefix: bool = True,
        pad_id: int = 0,
        eos_id: int | Sequence[int] | None = 1,
        length_buckets: bool = True,
    ):
        import jax

        from rlaif_jax.decoding import score
        from rlaif_jax.sharding import partition

        div = partition.batch_size_divisor(mesh)
        if batch_size % div:
            raise ValueError(
                f"ModelScorer.batch_size={batch_size} must be a multiple of the mesh's batch "
                f"divisor {div} (gin: labeler_from_checkpoint.batch_size)."
            )
        self.config, self.params, self.mesh, self.rules = config, params, mesh, rules
        self.batch_size, self.max_len = batch_size, max_len
        self.shared_prefix, self.pad_id, self.eos_id = shared_prefix, pad_id, eos_id
        self.length_buckets = length_buckets
        # Every stop id (a chat checkpoint may have several) ends a rationale.
        self._stops = (
            () if eos_id is None else (tuple(eos_id) if isinstance(eos_id, Sequence) else (eos_id,))
        )
        self._rows = partition.batch_sharding(mesh, 2)
        self._vec = partition.batch_sharding(mesh, 1)
        self._rep = partition.replicated(mesh)

        def naive(params, tokens, lengths, cands):
            return score.candidate_distribution(config, params, tokens, lengths, cands)[1]

        def shared(params, prefix, tokens, lengths, cands):
            return score.candidate_distribution_shared_prefix(
                config, params, prefix, tokens, lengths, cands
            )[1]

        self._naive = jax.jit(naive)
        self._shared = jax.jit(shared)
        # A mesh over several processes (d-RLAIF inside a multi-host RL job): every process
        # passes its own rows and all call in lockstep; a host-local mesh (label stage)
        # takes the whole batch from this process.
        local = {d.id for d in jax.local_devices()}
        self.spans_processes = any(d.id not in local for d in mesh.devices.flat)
        procs = jax.process_count() if self.spans_processes else 1
        if batch_size % procs:
            raise ValueError(
                f"ModelScorer.batch_size={batch_size} is not divisible by {procs} processes."
            )
        self.local_batch = batch_size // procs
        self._local_divisor = max(div // procs, 1)
        self._samplers: dict[tuple, Any] = {}

    def _bucket(self, longest: int, cap: int) -> int:
        """Padded length: power-of-two buckets on one host; a fixed cap when processes
        call in lockstep (every process must compile and run the same shapes) or
        without `length_buckets`."""
        from rlaif_jax.labeling.tokens import length_bucket

        if self.spans_processes or not self.length_buckets:
            if longest > cap:
                raise ValueError(f"Prompt of {longest} tokens exceeds ModelScorer.max_len.")
            return cap
        return length_bucket(longest, max(longest, cap))

    def _put(self, x: np.ndarray, sharding) -> Any:
        import jax

        return jax.make_array_from_process_local_data(sharding, x)

    @staticmethod
    def _local_rows(x: Any) -> np.ndarray:
        """This process's rows of a batch-sharded result, in order."""
        if x.is_fully_addressable:
            return np.asarray(x)
        parts = {}
        for shard in x.addressable_shards:
            parts.setdefault(shard.index[0].start or 0, np.asarray(shard.data))
        return np.concatenate([parts[k] for k in sorted(parts)], axis=0)

    def score(
        self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], candidate_ids: Sequence[int]
    ) -> np.ndarray:
        from rlaif_jax.sharding import partition

        n, k = len(suffixes), len(candidate_ids)
        out = np.zeros((n, k), np.float32)
        if n == 0:
            return out
        order = np.argsort([len(s) for s in suffixes], kind="stable")
        cands = self._put(np.asarray(candidate_ids, np.int32), self._rep)
        prefix = list(prefix)
        with partition.sharding_context(self.mesh, self.rules):
            for lo in range(0, n, self.local_batch):
                idx = order[lo : lo + self.local_batch]
                rows = _pad_rows([suffixes[i] for i in idx], self.local_batch)
                if self.shared_prefix:
                    longest = max(len(r) for r in rows)
                    L = self._bucket(longest, self.max_len - len(prefix))
                    toks = _right_pad(rows, L, self.pad_id)
                    lens = np.array([len(r) for r in rows], np.int32)
                    lp = self._shared(
                        self.params,
                        self._put(np.asarray(prefix, np.int32), self._rep),
                        self._put(toks, self._rows),
                        self._put(lens, self._vec),
                        cands,
                    )
                else:
                    full = [prefix + list(r) for r in rows]
                    longest = max(len(r) for r in full)
                    L = self._bucket(longest, self.max_len)
                    toks = _right_pad(full, L, self.pad_id)
                    lens = np.array([len(r) for r in full], np.int32)
                    lp = self._naive(
                        self.params, self._put(toks, self._rows), self._put(lens, self._vec), cands
                    )
                out[idx] = self._local_rows(lp)[: len(idx)]
        return out

    def generate(
        self,
        prefix: Sequence[int],
        suffixes: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_k: int,
        num_samples: int,
        seed: int,
    ) -> list[list[list[int]]]:
        import jax

        n = len(suffixes)
        out: list[list[list[int]]] = [[] for _ in range(n)]
        order = np.argsort([len(s) for s in suffixes], kind="stable")
        per_call = prompts_per_generate_call(self.local_batch, num_samples, self._local_divisor)
        run = self._sampler(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            num_samples=num_samples,
        )
        # Each prompt's random stream is its global id in the call (processes in lockstep
        # pass their own rows under one rng).
        first = jax.process_index() * per_call if self.spans_processes else 0
        ids = self._put(np.arange(first, first + per_call, dtype=np.int32), self._vec)
        rng = jax.random.PRNGKey(seed)
        for c, lo in enumerate(range(0, n, per_call)):
            idx = order[lo : lo + per_call]
            full = [list(prefix) + list(suffixes[i]) for i in idx]
            full = _pad_rows(full, per_call)
            L = self._bucket(max(len(r) for r in full), self.max_len)
            res = run(
                self.params,
                self._put(_right_pad(full, L, self.pad_id), self._rows),
                self._put(np.array([len(r) for r in full], np.int32), self._vec),
                self._put(np.asarray(jax.random.fold_in(rng, c)), self._rep),
                prompt_ids=ids,
            )
            toks = self._local_rows(res.tokens)
            lengths = self._local_rows(res.lengths)
            which = self._local_rows(res.prompt_index) - first
            for row in range(toks.shape[0]):
                j = int(which[row])
                if j >= len(idx):
                    continue  # padding prompt
                seq = [int(t) for t in toks[row, : int(lengths[row])]]
                cut = next((i for i, t in enumerate(seq) if t in self._stops), len(seq))
                out[idx[j]].append(seq[:cut])
        return out

    def _sampler(self, **settings) -> Any:
        """The rationale sampler for these decoding settings, jitted with the batch sharded
        over the mesh and the params' own shardings (built once per settings). Unsharded
        prompts left the placement to XLA: over 8 host-platform devices a [16, 1024]
        call took 9x longer and 5x the host memory (bench/RESULTS.md)."""
        import jax

        from rlaif_jax.decoding import sample as sampler

        key = tuple(sorted(settings.items()))
        if key not in self._samplers:
            self._samplers[key] = sampler.make_sampler(
                self.config,
                self.mesh,
                self.rules,
                param_shardings=jax.tree.map(lambda x: x.sharding, self.params),
                eos_id=self.eos_id,
                pad_id=self.pad_id,
                top_p=1.0,
                **settings,
            )
        return self._samplers[key]


@gin.configurable
def labeler_from_checkpoint(
    workdir: str,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    model_dir: str | None = None,
    model_overrides: dict | None = None,
    batch_size: int = 32,
    max_len: int | None = None,
    shared_prefix: bool = True,
    param_dtype: str | None = None,
    spec_only: bool = False,
) -> tuple[ModelScorer, Any]:
    """The labeler (also the AI judge and the d-RLAIF scorer): (ModelScorer, vocab).

    model_dir: an instruction-tuned Hugging Face checkpoint directory (its own tokenizer
      and chat template) or a model directory under WORKDIR ('labeler': the toy world's
      bootstrapped labeler); `model_overrides` may change compute settings (dtype, ...).
    The params are born sharded over THIS host's part of `mesh` (`mesh_lib.local_mesh`)
    with `rules` (the stage's: gin/sharding/fsdp.gin shards over every local device), so a
    labeler larger than one device works; each host labels its own shards. None: the
    local devices data-parallel, `get_rules()`. max_len (prompt tokens at most) defaults
    to the model's max_len. param_dtype: storage of the params (None = the artifact's or
    model_overrides'; RL passes its placement's). spec_only: return (config, batch_size,
    max_len) for a memory plan, loading nothing.
    """
    import jax

    if model_dir is None:
        raise ValueError(
            "labeler_from_checkpoint.model_dir is not set: point it at an instruction-tuned "
            "Hugging Face checkpoint (LABELER_HF_DIR in gin/experiments/paper/*.gin) or at a "
            "labeler model directory."
        )
    art = model_artifact.open_model(
        model_artifact.resolve_model_dir(workdir, model_dir, "labeler_from_checkpoint.model_dir")
    )
    if param_dtype is not None:
        model_overrides = {**(model_overrides or {}), "param_dtype": param_dtype}
    config = art.config_with(model_overrides, "labeler_from_checkpoint.model_overrides")
    if spec_only:
        return config, batch_size, max_len or config.max_len
    if mesh is None:
        mesh = mesh_lib.make_mesh(devices=jax.local_devices())
    mesh = mesh_lib.local_mesh(mesh)
    rules = rules if rules is not None else rules_lib.get_rules()
    params, _ = model_artifact.load_params(art, mesh, rules, "lm", config)
    scorer = ModelScorer(
        config,
        params,
        mesh,
        rules,
        batch_size=batch_size,
        max_len=max_len or config.max_len,
        shared_prefix=shared_prefix,
        pad_id=art.vocab.pad_id,
        eos_id=stop_ids(art.vocab),
    )
    return scorer, art.vocab

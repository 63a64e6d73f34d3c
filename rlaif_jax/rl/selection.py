"""RL checkpoint selection (paper §1.5): keep the K checkpoints with the highest reward
on validation prompts, judge each against SFT with the AI judge, keep the best.

During RL, every `SelectionSettings.validation_every` steps (and at the last step) the
policy samples the task's validation prompts and the RL reward function scores them
(`candidates.validation_reward`); the K best policies by that reward are kept in
OUT_DIR/candidates/ (`candidates.CandidateStore`). After the last step, SFT and each
candidate decode the validation prompts, the AI judge (the labeler with the task's
prompt, both orders: `labeling.judge.pair_judge`, as evaluation judges) compares each
candidate with SFT, and the candidate with the highest judged win rate becomes the
stage's policy: OUT_DIR/ckpt holds its params (what evaluation and export read), and
OUT_DIR/selection.json says which step was picked and why. The paper also inspects a
dozen samples by hand; here the judged win rate decides alone.

With selection on, the training checkpoints (the whole RL state) live in
OUT_DIR/train_ckpt, so OUT_DIR/ckpt is only ever the selected policy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax

from rlaif_jax import artifacts, fs, policy_decode
from rlaif_jax.data import tasks
from rlaif_jax.rates import mean_rate, per_prompt_mean, win_outcomes
from rlaif_jax.rl import candidates as candidates_lib
from rlaif_jax.train import checkpoint

logger = logging.getLogger("rlaif_jax.rl")

SELECTION_FILE = "selection.json"
TRAIN_CKPT = "train_ckpt"
CRITERION = "AI-judged win rate against SFT on validation prompts"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SelectionSettings:
    """Checkpoint selection (paper §1.5); `rl.selection = @SelectionSettings()` turns it on.

    num_candidates: K, the checkpoints with the highest validation reward that are judged
        (the paper: 4).
    validation_every: steps between validation-reward measurements (the last step is
        always measured, so it is always a candidate unless K others beat it).
    num_validation_prompts: validation prompts whose reward ranks checkpoints (None: all).
    num_judge_prompts: the first validation prompts that SFT and each candidate decode
        for the AI judge (None: the same as num_validation_prompts).
    judge_temperature / judge_samples_per_prompt: decoding of the judged responses (0:
        greedy, one per prompt, as `evaluate` decodes by default).
    strip_trailing_symbols: strip repeated trailing periods before judging (paper App.
        E); None = on for summarization only, as in `evaluate`.
    decode_batch_size: prompts per decoding call (a multiple of the mesh's batch size).
    judge_model_dir: the judge's model (None: `labeler_from_checkpoint.model_dir` in the
        RL stage's scope; set it where that scope's labeler is not the evaluation judge,
        e.g. d-RLAIF's same-size labeler).
    split: the split of the task's 'prompts' role that holds the validation prompts (a
        task without one falls back to the prompts of its 'sft' role of that split).
    """

    num_candidates: int = 4
    validation_every: int = 50
    num_validation_prompts: int | None = None
    num_judge_prompts: int | None = None
    judge_temperature: float = 0.0
    judge_samples_per_prompt: int = 1
    strip_trailing_symbols: bool | None = None
    decode_batch_size: int = 64
    judge_model_dir: str | None = None
    split: str = "validation"

    def __post_init__(self):
        for name in ("num_candidates", "validation_every", "judge_samples_per_prompt"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(
                    f"SelectionSettings.{name} = {getattr(self, name)!r} must be an int >= 1."
                )
        if self.judge_temperature == 0.0 and self.judge_samples_per_prompt > 1:
            raise ValueError(
                f"SelectionSettings.judge_samples_per_prompt = {self.judge_samples_per_prompt}"
                " with judge_temperature = 0: greedy decoding gives one response per prompt."
            )


def validation_prompts(data: tasks.TaskSources | None, settings: SelectionSettings) -> list:
    """{id, context} records: the task's 'prompts' of `settings.split`, else the contexts
    of its 'sft' examples of that split (the toy world holds validation posts there)."""
    data = tasks.need_data(data, "rl checkpoint selection")
    try:
        records = list(data.source("prompts", settings.split))
    except KeyError:
        try:
            sft = data.source("sft", settings.split)
        except KeyError as e:
            raise ValueError(
                f"SelectionSettings.split = {settings.split!r}: task {data.task!r} has no "
                f"validation prompts ({e.args[0]})"
            ) from e
        logger.info("rl: validation prompts from the %r split of the SFT data", settings.split)
        records = [{"id": r["id"], "context": r["context"]} for r in sft]
    records = records[: settings.num_validation_prompts or None]
    if not records:
        raise ValueError(f"SelectionSettings.split = {settings.split!r}: no validation prompts.")
    return records


class Validation:
    """The RL loop's eval_fn (`train.loop.run_training`): measures the state's policy on
    the validation prompts and offers it to the candidate store; {'validation_reward'}."""

    def __init__(self, runner, store, prompts, settings: SelectionSettings, seed: int):
        self.runner, self.store, self.prompts = runner, store, prompts
        self.every, self.seed = settings.validation_every, seed
        self.ckpt_dir: str | None = None

    def prepare(self, ckpt_dir: str) -> None:
        """Forgets measurements after the training checkpoint the run resumes from
        (`ckpt_dir`: the training checkpoints)."""
        self.ckpt_dir = ckpt_dir
        self.store.prepare(self._committed())

    def _committed(self) -> int:
        """The latest committed training checkpoint's step (0: none)."""
        if self.ckpt_dir is None or not fs.isdir(self.ckpt_dir):
            return 0
        manager = checkpoint.Checkpointer(self.ckpt_dir, async_save=False)
        latest = manager.latest_step()
        manager.close()
        return latest or 0

    def __call__(self, state) -> dict[str, float]:
        step = int(jax.device_get(state.step))
        row = self.store.measured(step)
        if row is None:  # not measured before the checkpoint this run resumed from
            reward, n = candidates_lib.validation_reward(
                self.runner, state.params["policy"], self.prompts, self.seed
            )
            # The store keeps what evaluation reads: the plain LM params (a LoRA runner
            # merges its adapters, `RLRunner.export_policy`).
            export = getattr(self.runner, "export_policy", lambda st: st.params["policy"])
            kept = self.store.offer(step, reward, n, export(state))
            logger.info(
                "rl: step %d validation reward %.4f (n=%d, kept: %s)", step, reward, n, kept
            )
            row = self.store.measured(step)
            self.store.release(self._committed())
        return {"validation_reward": float(row["validation_reward"])}


def judge_candidates(
    rows: Sequence[dict],
    texts: dict[int, list[str]],
    sft_texts: list[str],
    judge: Callable,
    prompts: Sequence[dict],
    samples_per_prompt: int,
) -> list[dict]:
    """Each candidate row + 'win_rate_vs_sft' ({value, ci_low, ci_high, n}: the mean over
    the N prompts of each prompt's share of samples the judge prefers to SFT's sample j;
    `rates.win_outcomes`, ties 0.5) and 'validation_rank' (1 = highest reward).
    texts: {step: responses [N·k]} (prompt-major), sft_texts [N·k]; judge(prompts [N·k],
    a, b) -> P(a ≻ b)."""
    judged = [p for p in prompts for _ in range(samples_per_prompt)]
    by_reward = sorted(rows, key=lambda r: (-_finite(r["validation_reward"]), r["step"]))
    out = []
    for row in rows:
        outcome = win_outcomes(judge(judged, texts[row["step"]], sft_texts))
        rate = mean_rate(per_prompt_mean(outcome, len(prompts))).to_dict()
        rank = 1 + [r["step"] for r in by_reward].index(row["step"])
        out.append({**row, "validation_rank": rank, "win_rate_vs_sft": rate})
    return out


def choose(rows: Sequence[dict]) -> tuple[int, str]:
    """(step, why) of the judged candidate with the highest win rate against SFT; ties go
    to the higher validation reward, then to the earlier step (closer to SFT)."""
    if not rows:
        raise ValueError("no candidate checkpoints to choose from")
    best = max(
        rows,
        key=lambda r: (
            _finite(r["win_rate_vs_sft"]["value"]),
            _finite(r["validation_reward"]),
            -r["step"],
        ),
    )
    win = best["win_rate_vs_sft"]
    why = (
        f"step {best['step']}: the highest AI-judged win rate against SFT "
        f"({_pct(win['value'])}, n={win['n']}) of the {len(rows)} checkpoints with the "
        f"highest validation reward; its validation reward {best['validation_reward']:.4g} "
        f"ranked {best['validation_rank']} of {len(rows)}"
    )
    top = min(rows, key=lambda r: r["validation_rank"])
    if top["step"] != best["step"]:
        tied = top["validation_reward"] == best["validation_reward"]
        how = "tied with it on validation reward" if tied else "had the highest validation reward"
        why += (
            f" (step {top['step']} {how}, {top['validation_reward']:.4g}, but won "
            f"{_pct(top['win_rate_vs_sft']['value'])})"
        )
    return best["step"], why + "."


def select_checkpoint(
    out_dir: str,
    store: candidates_lib.CandidateStore,
    prompts: Sequence[dict],
    settings: SelectionSettings,
    *,
    decode: Callable[[Any], list[str]],
    restore: Callable[[int], Any],
    load_sft: Callable[[], Any],
    make_judge: Callable[[], Callable],
    final_step: int,
    strip_trailing: bool,
) -> dict:
    """Judges the store's candidates against SFT and writes the pick as the stage's
    policy (OUT_DIR/ckpt) and OUT_DIR/selection.json; returns the selection record.

    decode(params) -> responses [N·k] of `prompts`; restore(step) -> a candidate's
    params; load_sft() -> the SFT params; make_judge() -> judge(prompts, a, b) -> P(a ≻ b) [N·k], built after every
    policy has decoded (only one model is held at a time)."""
    rows = store.rows()
    if not rows:
        raise ValueError(f"{store.directory}: no candidate checkpoints were kept.")
    k = settings.judge_samples_per_prompt
    sft_texts = decode(load_sft())
    texts = {}
    for row in rows:
        texts[row["step"]] = decode(restore(row["step"]))
    judged = judge_candidates(rows, texts, sft_texts, make_judge(), prompts, k)
    step, why = choose(judged)
    logger.info("rl: checkpoint selection: %s", why)
    for row in judged:
        row["selected"] = row["step"] == step
    _write_policy(out_dir, restore(step))
    record = {
        "criterion": CRITERION,
        "selected_step": step,
        "final_step": final_step,
        "reason": why,
        "num_prompts": len(prompts),
        "samples_per_prompt": k,
        "temperature": settings.judge_temperature,
        "strip_trailing_symbols": strip_trailing,
        "candidates": sorted(judged, key=lambda r: r["step"]),
        "validation_history": store.history,
    }
    if jax.process_index() == 0:
        artifacts.atomic_write(
            os.path.join(out_dir, SELECTION_FILE),
            json.dumps(artifacts.json_safe(record), indent=1) + "\n",
        )
    return record


def read_selection(out_dir: str) -> dict | None:
    """The stage's selection record, if selection finished (policy written, then record)."""
    path = os.path.join(out_dir, SELECTION_FILE)
    if not fs.isfile(path) or not fs.isdir(os.path.join(out_dir, "ckpt")):
        return None
    return json.loads(fs.read_text(path))


def _write_policy(out_dir: str, params: Any) -> None:
    """OUT_DIR/ckpt := params (a params-only checkpoint, the model artifact's policy)."""
    target = os.path.join(out_dir, "ckpt")
    if jax.process_index() == 0 and fs.isdir(target):  # a selection cut short before
        fs.rmtree(target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("rl_selection_policy")
    checkpoint.save_params(target, params, {"selected": True})


def run_selection(
    workdir: str,
    out_dir: str,
    store: candidates_lib.CandidateStore,
    prompts: Sequence[dict],
    settings: SelectionSettings,
    *,
    policy: Any,
    config: Any,
    layout: Any,
    mesh,
    rules,
    task: str | None,
    final_step: int,
) -> dict:
    """`select_checkpoint` on real models: the SFT `policy` artifact (with `config`, its
    compute overrides) and the candidates decode the first `num_judge_prompts` prompts
    with `layout`; the judge is the labeler (`labeler_from_checkpoint`, model_dir from
    `settings.judge_model_dir` when set) with the task's prompt."""
    from rlaif_jax import model_artifact
    from rlaif_jax.labeling.judge import pair_judge
    from rlaif_jax.labeling.scoring import labeler_from_checkpoint
    from rlaif_jax.sharding import model_params

    done = read_selection(out_dir)
    if done is not None:
        logger.info("rl: checkpoint selection already done: %s", done["reason"])
        return done
    store.release(final_step)  # training is over: no resume goes back before its end
    judged_prompts = list(prompts[: settings.num_judge_prompts or None])
    strip = (
        policy_decode.strips_trailing_by_default(task)
        if settings.strip_trailing_symbols is None
        else bool(settings.strip_trailing_symbols)
    )
    structs, _ = model_params.abstract_params(config, mesh, rules, "lm")

    def decode(params):
        return policy_decode.decode_policy(
            config, params, policy.vocab, layout, judged_prompts, mesh, rules,
            temperature=settings.judge_temperature, batch_size=settings.decode_batch_size,
            strip_trailing=strip, num_samples=settings.judge_samples_per_prompt,
        )  # fmt: skip

    def make_judge():
        where = {"model_dir": settings.judge_model_dir} if settings.judge_model_dir else {}
        scorer, vocab = labeler_from_checkpoint(workdir, mesh, rules, **where)
        return pair_judge(scorer, vocab, task)

    return select_checkpoint(
        out_dir,
        store,
        judged_prompts,
        settings,
        decode=decode,
        restore=lambda step: checkpoint.restore_params(store.step_dir(step), structs),
        load_sft=lambda: model_artifact.load_params(policy, mesh, rules, "lm", config)[0],
        make_judge=make_judge,
        final_step=final_step,
        strip_trailing=strip,
    )


def _finite(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else -math.inf


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, int | float) and math.isfinite(x) else "n/a"

"""`rlaif-jax STAGE --gin_file F [--gin_file G] [--gin_bindings 'X = 1'] [--gin.X=1] [--workdir D]`.

Stages register in `STAGES` by module; the module's `run_stage` is gin-configurable
and is called, after gin is parsed and inside the stage's gin scope, as
`run_stage(workdir=WORKDIR, **configurables.stage_objects(run_stage))`: the mesh, rules,
task data, optimizer and TrainSettings it declares, built from gin (gin at the boundary,
DESIGN §3). It may expose an `add_arguments(parser)` attribute for stage-specific flags
(e.g. `bench --preset`), in which case it also gets `args=NAMESPACE`.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence

from rlaif_jax import configurables, gin_utils, host_malloc
from rlaif_jax.model_artifact import ArtifactError
from rlaif_jax.sharding.memory import MemoryPlanError

logger = logging.getLogger("rlaif_jax.cli")

STAGES: dict[str, tuple[str, str]] = {
    "sft": ("rlaif_jax.sft", "Supervised fine-tuning of the initial policy."),
    "label": ("rlaif_jax.labeling.stage", "AI preference labeling of a pair dataset."),
    "reward": ("rlaif_jax.reward", "Reward model on AI (RLAIF) or human (RLHF) preferences."),
    "rl": ("rlaif_jax.rl.stage", "A2C policy training with KL to the SFT policy."),
    "evaluate": ("rlaif_jax.evaluation.stage", "Win rates, alignment, RM accuracy, report."),
    "pipeline": ("rlaif_jax.pipeline", "Every stage of an experiment, skipping finished ones."),
    "bench": ("rlaif_jax.bench", "Throughput benchmark (train, score, sample)."),
    "plan": (
        "rlaif_jax.rl.stage",
        "Memory plan per role and device of every step of pipeline.steps (or of one stage: "
        "--stage, default rl); loads nothing; exit 2 if a step does not fit.",
    ),
    "export": ("rlaif_jax.export", "Trained policies and reward models to the HF layout."),
    "sample_pairs": (
        "rlaif_jax.pair_sampling",
        "Preference pairs sampled from a policy (on-policy pair data).",
    ),
    "table": (
        "rlaif_jax.paper_tables",
        "One of the paper's tables: its rows run, written beside the paper's numbers.",
    ),
    "bootstrap_labeler": (
        "rlaif_jax.toy.labeler_bootstrap",
        "Toy world only: train the stand-in off-the-shelf labeler.",
    ),
}

STAGE_FUNCTION = "run_stage"
# `rlaif-jax plan`: each stage's own pre-load plan (`run_stage(plan_only=True)`), for every
# step of the gin files' pipeline.steps, else for --stage (default rl) in --scope.
PLAN_STAGE, PLAN_SCOPE = "plan", "rl"


def register_stage(name: str, module: str, help_text: str) -> None:
    """Adds a stage: `module` must define a gin-configurable `run_stage(workdir, ...)`
    (parameters named in `configurables.OBJECTS` receive those objects)."""
    STAGES[name] = (module, help_text)


def _usage() -> str:
    lines = [
        "usage: rlaif-jax STAGE [--gin_file F ...] [--gin_bindings B ...] [--gin.X=Y ...] [--workdir D]",
        "",
        "stages:",
    ]
    lines += [f"  {k:<18} {v[1]}" for k, v in STAGES.items()]
    return "\n".join(lines)


def _build_parser(stage: str, fn: Callable) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"rlaif-jax {stage}", description=STAGES[stage][1])
    parser.add_argument("--gin_file", action="append", default=[], help="Gin file (repeatable).")
    parser.add_argument(
        "--gin_bindings", action="append", default=[], help="Gin binding (repeatable)."
    )
    parser.add_argument(
        "--gin_search_paths",
        action="append",
        default=[],
        help="Extra gin search directories: a comma-separated list (repeatable).",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="Work directory for stage artifacts, local or gs://...; also sets the gin macro "
        "WORKDIR.",
    )
    parser.add_argument(
        "--scope",
        default=PLAN_SCOPE if stage == PLAN_STAGE else stage,
        help="Gin scope the stage runs in (default: the stage name), e.g. rm_ai or rl_rlhf to "
        "run one step of an experiment file on its own.",
    )
    parser.add_argument(
        "--coordinator_address", default=None, help="jax.distributed coordinator host:port."
    )
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--process_id", type=int, default=None)
    parser.add_argument(
        "--multihost", action="store_true", help="Call jax.distributed.initialize() (TPU pods)."
    )
    if stage == PLAN_STAGE:
        parser.add_argument(
            "--stage",
            default=None,
            help="Plan this stage alone in --scope (default: every step of pipeline.steps "
            "when the gin files bind it, else rl).",
        )
    if hasattr(fn, "add_arguments"):
        fn.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"rlaif-jax: unknown stage {stage!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[stage][0])
    fn = getattr(module, STAGE_FUNCTION)
    try:
        rest, shorthand = gin_utils.rewrite_gin_shorthand(rest)
    except gin_utils.GinUsageError as e:
        print(f"rlaif-jax {stage}: {e}", file=sys.stderr)
        return 2
    parser = _build_parser(stage, fn)
    args = parser.parse_args(rest)

    from rlaif_jax import runtime

    runtime.initialize(
        runtime.DistributedConfig(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
            auto=args.multihost,
        )
    )
    bindings = list(args.gin_bindings) + shorthand
    try:
        bindings += _workdir_binding(args.workdir, bindings)
        gin_utils.parse_gin(
            args.gin_file, bindings, gin_utils.split_search_paths(args.gin_search_paths)
        )
    except gin_utils.GinUsageError as e:
        print(f"rlaif-jax {stage}: {e}", file=sys.stderr)
        return 2
    kwargs = {}
    # --workdir, else the WORKDIR macro (t5x style: --gin.WORKDIR="'dir'").
    workdir = args.workdir or _gin_workdir()
    if workdir is not None:
        kwargs["workdir"] = workdir
    if hasattr(fn, "add_arguments"):
        kwargs["args"] = args
    if stage == PLAN_STAGE:
        return _plan(args, workdir)
    import gin

    if workdir:  # a run that dies before the end still leaves its config
        gin_utils.write_operative_config(workdir, stage, started=True)
    try:
        with runtime.compilation_cache(workdir), gin.config_scope(args.scope):
            fn(**kwargs, **configurables.stage_objects(fn))
    except (gin_utils.GinUsageError, ArtifactError, MemoryPlanError) as e:
        print(f"rlaif-jax {stage}: {e}", file=sys.stderr)
        return 2
    if workdir:
        gin_utils.write_operative_config(workdir, stage)
    return 0


def _plan(args: argparse.Namespace, workdir: str | None) -> int:
    """`rlaif-jax plan`: one table per step (each stage's `run_stage(plan_only=True)` in
    its gin scope, as the pipeline runs them). Pipeline steps are planned in a scratch
    work directory, each after the steps before it have written their model
    descriptions (model.json, tokenizer; no weights), so a plan needs no finished stage
    and touches no real work directory. Exit 2 naming each step that does not fit."""
    import gin

    steps = None if args.stage else _pipeline_steps()
    scratch = None
    if steps is None:
        stage = args.stage or PLAN_SCOPE
        # --stage X without --scope plans X in its own scope (as `rlaif-jax X` runs it).
        scope = stage if args.stage and args.scope == PLAN_SCOPE else args.scope
        steps = [(stage, scope, stage)]
    else:
        scratch = tempfile.mkdtemp(prefix="rlaif_jax_plan_")
    failed = []
    try:
        for stage, scope, output in steps:
            title = f"step {output} ({stage}, gin scope {scope})"
            print(f"\n## {title}\n", flush=True)
            with gin.unlock_config():
                module = importlib.import_module(STAGES[stage][0])
            entry = getattr(module, STAGE_FUNCTION)
            if "plan_only" not in inspect.signature(entry).parameters:
                print(f"{stage}: no plan of its own (the stages it runs plan themselves).")
                continue
            try:
                with gin.config_scope(None), gin.config_scope(scope):
                    objects = configurables.stage_objects(entry)
                    where = scratch or workdir
                    entry(**({"workdir": where} if where else {}), plan_only=True, **objects)
            except MemoryPlanError as e:
                print(f"{title} does not fit.\n\n{e}", flush=True)
                failed.append(f"{title}: {str(e).splitlines()[0]}")
            except (gin_utils.GinUsageError, ArtifactError, ValueError, FileNotFoundError) as e:
                print(f"{title} could not be planned: {e}", flush=True)
                failed.append(f"{title}: could not be planned ({e})")
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if failed:
        print("\nrlaif-jax plan: " + "\n".join(failed), file=sys.stderr)
        return 2
    print(f"\nEvery planned step fits ({len(steps)} steps).")
    return 0


def _pipeline_steps() -> list[tuple[str, str, str]] | None:
    """pipeline.steps when the gin files bind it (checked like the pipeline does)."""
    import gin

    try:
        steps = gin.query_parameter("pipeline.steps")
    except ValueError:
        return None
    for i, step in enumerate(steps):
        if len(step) != 3 or step[0] not in STAGES:
            raise gin_utils.GinUsageError(
                f"pipeline.steps[{i}] = {step!r}: each step is (stage, scope, output_dir) "
                f"with a stage of {sorted(STAGES)}."
            )
    return [tuple(step) for step in steps]


_WORKDIR_BINDING = re.compile(rf"^\s*{gin_utils.CLI_WORKDIR_MACRO}\s*=\s*(.+?)\s*$")


def _workdir_binding(workdir: str | None, bindings: Sequence[str]) -> list[str]:
    """`--workdir D` also binds the gin macro (`WORKDIR = 'D'`), so run files that declare
    `WORKDIR = %gin.REQUIRED` or read `%WORKDIR` see the flag. A WORKDIR binding on the
    command line that names another directory is an error naming both."""
    if workdir is None:
        return []
    macro = gin_utils.CLI_WORKDIR_MACRO
    for b in bindings:
        m = _WORKDIR_BINDING.match(b)
        if not m:
            continue
        try:
            value = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            value = m.group(1)
        if value != workdir:
            raise gin_utils.GinUsageError(
                f"--workdir={workdir!r} and the binding {b!r} name different work "
                f"directories; give one (--workdir sets the gin macro {macro})."
            )
    return [f"{macro} = {workdir!r}"]


def _gin_workdir() -> str | None:
    """The WORKDIR gin macro, when the config defines one."""
    import gin

    try:
        value = gin.query_parameter("%WORKDIR")
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def entry_point() -> None:
    """The `rlaif-jax` command: host allocator settings first (`host_malloc`), then main."""
    try:
        host_malloc.configure()
    except ValueError as e:  # a bad RLAIF_JAX_MALLOC
        sys.exit(f"rlaif-jax: {e}")
    sys.exit(main())


if __name__ == "__main__":
    entry_point()

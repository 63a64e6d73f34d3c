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
import logging
import re
import sys
from collections.abc import Callable, Sequence

from rlaif_jax import configurables, gin_utils
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
        "Memory plan of the RL stage's roles per device (loads nothing; exit 2 if over).",
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
# `rlaif-jax plan`: the RL stage's own pre-load plan (gin scope 'rl' unless --scope).
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
        kwargs["plan_only"] = True
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
    sys.exit(main())


if __name__ == "__main__":
    entry_point()

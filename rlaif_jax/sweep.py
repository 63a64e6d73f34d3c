"""Ablation sweeps: one run per variant of gin overrides, then one table of their metrics.

    python -m rlaif_jax.sweep STAGE --base_workdir BASE
        (--sweep_file F | --variant NAME:'--gin.X=1 --gin.Y=2' ...)
        [--command 'rlaif-jax'] [--launcher local|tpu --tpu_args '--name N --zone Z ...']
        [--metrics_file report/metrics.json] [--jobs N] [--skip_complete] [--gather_only]
        [--keys 'win_rate_*,labeler_alignment'] [--out_dir DIR] [--dry_run]
        [-- ARGS FOR EVERY RUN, e.g. --gin_file=gin/experiments/demo.gin]

Variant NAME runs `COMMAND STAGE COMMON_ARGS VARIANT_ARGS --workdir BASE/NAME`, locally as a
subprocess (log: OUT_DIR/sweep_logs/NAME.log) or on a TPU VM through
`launch/run_tpu_vm.sh TPU_ARGS -- ...`. Then every run's `BASE/NAME/METRICS_FILE` (default
`report/metrics.json`; gs:// works through tf.io.gfile) is read, nested objects flattened to
dotted keys, and written as OUT_DIR/sweep.{md,csv,json}: one row per variant, one column
per metric key.

Sweep files (JSON, YAML, or text) — see launch/README.md:
    JSON/YAML: {"stage": "pipeline", "common_args": "--gin_file=...",
                "metrics_file": "report/metrics.json",
                "variants": {"base": "", "lr_low": "--gin.LR=1e-5", "kl": {"KL_COEF": 0.1}}}
    text:      one `NAME: ARGS` per line, `#` comments.
A mapping variant {BINDING: VALUE} becomes `--gin.BINDING=VALUE`; a string VALUE is gin
text as written (so a gin string literal is "'text'"), other values their Python literal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rlaif_jax import sweep_table

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_METRICS_FILE = "report/metrics.json"
LAUNCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch")


class SweepError(ValueError):
    """A bad sweep file or flag, with a message that names the file, line or field."""


@dataclass(frozen=True)
class Variant:
    name: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class SweepSpec:
    variants: tuple[Variant, ...]
    stage: str | None = None
    common_args: tuple[str, ...] = ()
    metrics_file: str | None = None


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SweepError(
            f"{where}: variant name {name!r} must match {_NAME_RE.pattern} "
            "(it becomes a directory name)."
        )
    return name


def _args(value: Any, where: str) -> tuple[str, ...]:
    """Variant args from a shell string, a list of words, or a {binding: value} mapping."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as e:
            raise SweepError(f"{where}: cannot split {value!r}: {e}") from e
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, Mapping):
        out = []
        for k, v in value.items():
            if isinstance(v, str):
                text = v
            elif isinstance(v, bool | int | float | list | tuple) or v is None:
                text = repr(v)
            else:
                raise SweepError(f"{where}: binding {k!r} has unsupported value {v!r}.")
            out.append(f"--gin.{k}={text}")
        return tuple(out)
    raise SweepError(
        f"{where}: expected a string of flags, a list of flags or a mapping of gin "
        f"bindings, got {value!r}."
    )


def parse_variant_flag(text: str) -> Variant:
    """`NAME:ARGS` (from `--variant`) -> Variant; ARGS is shell-split."""
    name, sep, rest = text.partition(":")
    if not sep:
        raise SweepError(f"--variant {text!r}: write NAME:'--gin.X=Y ...'.")
    where = f"--variant {text!r}"
    return Variant(_check_name(name.strip(), where), _args(rest, where))


def _from_mapping(data: Any, path: str) -> SweepSpec:
    if not isinstance(data, Mapping) or "variants" not in data:
        raise SweepError(f"{path}: expected a mapping with a 'variants' field.")
    unknown = set(data) - {"stage", "common_args", "metrics_file", "variants"}
    if unknown:
        raise SweepError(
            f"{path}: unknown field(s) {sorted(unknown)}; fields are stage, common_args, "
            "metrics_file, variants."
        )
    raw = data["variants"]
    items: list[tuple[Any, Any]] = []
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            if not isinstance(v, Mapping) or "name" not in v:
                raise SweepError(f"{path}: variants[{i}] needs a 'name' field.")
            items.append((v["name"], v.get("args", v.get("gin"))))
    else:
        raise SweepError(f"{path}: 'variants' must be a mapping or a list.")
    variants = tuple(
        Variant(_check_name(n, f"{path}: variants"), _args(a, f"{path}: variants.{n}"))
        for n, a in items
    )
    stage = data.get("stage")
    metrics_file = data.get("metrics_file")
    for key, value in (("stage", stage), ("metrics_file", metrics_file)):
        if value is not None and not isinstance(value, str):
            raise SweepError(f"{path}: field {key!r} must be a string, got {value!r}.")
    return SweepSpec(
        variants, stage, _args(data.get("common_args"), f"{path}: common_args"), metrics_file
    )


def load_sweep_file(path: str) -> SweepSpec:
    """Reads a .json, .yaml/.yml or text (`NAME: ARGS` lines) sweep file."""
    with open(path) as f:
        text = f.read()
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SweepError(f"{path}:{e.lineno}: invalid JSON: {e.msg}.") from e
        spec = _from_mapping(data, path)
    elif ext in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise SweepError(f"{path}: YAML sweep files need PyYAML (pip install pyyaml).") from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SweepError(f"{path}: invalid YAML: {e}") from e
        spec = _from_mapping(data, path)
    else:
        variants = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, rest = line.partition(":")
            where = f"{path}:{lineno}"
            if not sep:
                raise SweepError(f"{where}: expected `NAME: --gin.X=Y ...`, got {line!r}.")
            variants.append(Variant(_check_name(name.strip(), where), _args(rest, where)))
        spec = SweepSpec(tuple(variants))
    _check_unique(spec.variants, path)
    return spec


def _check_unique(variants: Sequence[Variant], where: str) -> None:
    seen: set[str] = set()
    for v in variants:
        if v.name in seen:
            raise SweepError(f"{where}: variant {v.name!r} is defined twice.")
        seen.add(v.name)
    if not variants:
        raise SweepError(f"{where}: no variants.")


def variant_workdir(base: str, name: str) -> str:
    return sweep_table.join(base, name)


def run_command(
    command: Sequence[str],
    stage: str,
    common_args: Sequence[str],
    variant: Variant,
    workdir: str,
    launcher: str = "local",
    tpu_args: Sequence[str] = (),
) -> list[str]:
    """The argv that runs one variant (locally, or through launch/run_tpu_vm.sh)."""
    jax_args = [stage, *common_args, *variant.args, f"--workdir={workdir}"]
    if launcher == "local":
        return [*command, *jax_args]
    if launcher == "tpu":
        return [os.path.join(LAUNCH_DIR, "run_tpu_vm.sh"), *tpu_args, "--", *jax_args]
    raise SweepError(f"--launcher must be local or tpu, not {launcher!r}.")


def _run_one(argv: Sequence[str], log_path: str) -> tuple[int, float]:
    start = time.time()
    with sweep_table.open_path(log_path, "w") as log:
        log.write(f"+ {shlex.join(argv)}\n")
        log.flush()
        proc = subprocess.run(list(argv), stdout=log, stderr=subprocess.STDOUT, check=False)
    return proc.returncode, time.time() - start


def run_sweep(
    spec: SweepSpec,
    base_workdir: str,
    command: Sequence[str] = ("rlaif-jax",),
    launcher: str = "local",
    tpu_args: Sequence[str] = (),
    metrics_file: str = DEFAULT_METRICS_FILE,
    log_dir: str = "sweep_logs",
    jobs: int = 1,
    skip_complete: bool = False,
    gather_only: bool = False,
    dry_run: bool = False,
    echo=print,
) -> list[sweep_table.RunResult]:
    """Runs every variant (unless skipped) and reads its metrics; returns one result each."""
    if spec.stage is None:
        raise SweepError("no stage: give STAGE on the command line or `stage:` in the sweep file.")
    if launcher == "tpu" and jobs != 1:
        raise SweepError("--launcher tpu runs variants one after another on one VM: use --jobs 1.")

    def one(variant: Variant) -> sweep_table.RunResult:
        workdir = variant_workdir(base_workdir, variant.name)
        metrics_path = variant_workdir(workdir, metrics_file)
        argv = run_command(
            command, spec.stage, spec.common_args, variant, workdir, launcher, tpu_args
        )
        if dry_run:
            echo(f"+ {shlex.join(argv)}")
            return sweep_table.RunResult(variant.name, workdir, "dry_run")
        result = sweep_table.RunResult(variant.name, workdir, "ok")
        if gather_only or (skip_complete and sweep_table.exists(metrics_path)):
            result.status = "skipped"
        else:
            log_path = os.path.join(log_dir, f"{variant.name}.log")
            echo(f"[sweep] {variant.name}: {shlex.join(argv)}  (log: {log_path})")
            result.returncode, result.seconds = _run_one(argv, log_path)
            if result.returncode != 0:
                result.status = "failed"
                echo(
                    f"[sweep] {variant.name}: FAILED with exit {result.returncode}; see {log_path}"
                )
        if sweep_table.exists(metrics_path):
            result.metrics = sweep_table.read_metrics(metrics_path)
        elif result.status != "failed":
            result.status = "no_metrics"
            echo(f"[sweep] {variant.name}: no metrics at {metrics_path}")
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, spec.variants))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rlaif_jax.sweep",
        description="Run gin-override variants of a stage and tabulate their metrics.",
        epilog="Arguments after `--` are passed to every run (e.g. --gin_file=...).",
    )
    p.add_argument("stage", nargs="?", default=None, help="rlaif-jax stage (or sweep file's).")
    p.add_argument("--base_workdir", required=True, help="Each variant runs in BASE/NAME.")
    p.add_argument("--sweep_file", default=None, help=".json, .yaml or `NAME: ARGS` text file.")
    p.add_argument(
        "--variant", action="append", default=[], help="NAME:'ARGS' (repeatable; after the file's)."
    )
    p.add_argument("--command", default="rlaif-jax", help="Program to run, shell-split.")
    p.add_argument("--launcher", choices=("local", "tpu"), default="local")
    p.add_argument(
        "--tpu_args", default="", help="Flags for launch/run_tpu_vm.sh (--launcher tpu)."
    )
    p.add_argument(
        "--metrics_file", default=None, help=f"Relative to each workdir [{DEFAULT_METRICS_FILE}]."
    )
    p.add_argument("--keys", default="", help="Comma-separated glob patterns of metric columns.")
    p.add_argument("--out_dir", default=None, help="Table directory [BASE if local, else .].")
    p.add_argument("--log_dir", default=None, help="Per-variant logs [OUT_DIR/sweep_logs].")
    p.add_argument("--jobs", type=int, default=1, help="Variants run at once (local launcher).")
    p.add_argument("--skip_complete", action="store_true", help="Skip runs that have metrics.")
    p.add_argument("--gather_only", action="store_true", help="Only read metrics, run nothing.")
    p.add_argument("--dry_run", action="store_true", help="Print each run's command, run nothing.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    args = _parser().parse_args(argv)
    try:
        spec = load_sweep_file(args.sweep_file) if args.sweep_file else SweepSpec(())
        variants = spec.variants + tuple(parse_variant_flag(v) for v in args.variant)
        _check_unique(variants, args.sweep_file or "--variant flags")
        spec = SweepSpec(
            variants,
            args.stage or spec.stage,
            spec.common_args + tuple(extra),
            args.metrics_file or spec.metrics_file,
        )
        out_dir = args.out_dir or (args.base_workdir if "://" not in args.base_workdir else ".")
        log_dir = args.log_dir or os.path.join(
            out_dir if "://" not in out_dir else ".", "sweep_logs"
        )
        results = run_sweep(
            spec,
            args.base_workdir,
            command=shlex.split(args.command),
            launcher=args.launcher,
            tpu_args=shlex.split(args.tpu_args),
            metrics_file=spec.metrics_file or DEFAULT_METRICS_FILE,
            log_dir=log_dir,
            jobs=args.jobs,
            skip_complete=args.skip_complete,
            gather_only=args.gather_only,
            dry_run=args.dry_run,
        )
    except (SweepError, sweep_table.MetricsError, OSError) as e:
        print(f"sweep: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    columns, rows = sweep_table.build_table(results, keys)
    paths = sweep_table.write_table(columns, rows, out_dir)
    with sweep_table.open_path(paths["md"]) as f:
        print(f.read(), end="")
    print(f"[sweep] table: {paths['md']}, {paths['csv']}, {paths['json']}")
    bad = [r.variant for r in results if r.status in ("failed", "no_metrics")]
    if bad:
        print(f"[sweep] variants without results: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Gin at the CLI boundary, in t5x conventions.

- Search paths: the repo's `gin/` (or the installed copy, package `rlaif_jax.gin`)
  plus `--gin_search_paths` (a comma-separated list, repeatable), so
  `include 'runs/rl.gin'` works from any directory.
- `--gin.NAME=VALUE` shorthand rewritten to the binding `NAME = VALUE`.
- `NAME = %gin.REQUIRED` macros checked after parsing; a missing one is reported
  with the file that declares it.
- The config is written to `WORKDIR/config.gin` and `config_<stage>.gin` (host 0): the
  parsed config when a stage starts (so a crashed run leaves one), the operative config
  when it finishes. WORKDIR may be a URI (gs://...): written through `rlaif_jax.fs`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gin

from rlaif_jax import artifacts, fs

CLI_WORKDIR_MACRO = "WORKDIR"


class GinUsageError(ValueError):
    """A misuse of gin files or bindings, with a message written for people."""


_REQUIRED_RE = re.compile(r"^\s*([A-Za-z_][\w./]*)\s*=\s*%gin\.REQUIRED\s*(#.*)?$")
_INCLUDE_RE = re.compile(r"""^\s*include\s+['"]([^'"]+)['"]""")


class _QuietGinResourceProbe(logging.Filter):
    """gin probes every include as a Python package path first and logs an ERROR when it
    is not one ('Path not found: runs/x.gin') before finding the file on the search path;
    that probe is noise, real misses still raise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.endswith(os.path.join("gin", "resource_reader.py"))


logging.getLogger().addFilter(_QuietGinResourceProbe())


def default_search_paths() -> list[str]:
    """The repo's gin/ directory (editable installs) and the installed copy (rlaif_jax/gin)."""
    package_dir = Path(__file__).resolve().parent
    candidates = [package_dir.parent / "gin", package_dir / "gin"]
    return [str(p) for p in candidates if p.is_dir()]


def split_search_paths(values: Iterable[str]) -> list[str]:
    """`--gin_search_paths` values (each a comma-separated list, as in t5x) -> paths."""
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def rewrite_gin_shorthand(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits `--gin.NAME=VALUE` / `--gin.NAME VALUE` out of argv into bindings.

    Returns (remaining argv, bindings like 'NAME = VALUE').
    """
    rest, bindings = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--gin.") and not arg.startswith("--gin_"):
            body = arg[len("--gin.") :]
            if "=" in body:
                name, value = body.split("=", 1)
            elif i + 1 < len(argv):
                name, value = body, argv[i + 1]
                i += 1
            else:
                raise GinUsageError(f"Binding {arg!r} has no value; write --gin.{body}=VALUE.")
            if not name:
                raise GinUsageError(f"Binding {arg!r} names nothing; write --gin.NAME=VALUE.")
            bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
        i += 1
    return rest, bindings


def resolve_gin_file(name: str, search_paths: Sequence[str]) -> str:
    """Finds a gin file as given, relative to cwd, or under a search path."""
    candidates = (
        [name] if os.path.isabs(name) else [name] + [os.path.join(p, name) for p in search_paths]
    )
    for c in candidates:
        if os.path.isfile(c):
            return os.path.abspath(c)
    raise GinUsageError(
        f"Gin file {name!r} not found. Looked in the current directory and the gin search "
        f"path: {list(search_paths)}. Add a directory with --gin_search_paths."
    )


def _required_macros(path: str, search_paths: Sequence[str], seen: set[str]) -> dict[str, str]:
    """Macros declared `NAME = %gin.REQUIRED` in `path` and its includes -> declaring file."""
    if path in seen:
        return {}
    seen.add(path)
    found: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            m = _REQUIRED_RE.match(line)
            if m:
                found.setdefault(m.group(1), path)
            inc = _INCLUDE_RE.match(line)
            if inc:
                try:
                    sub = resolve_gin_file(inc.group(1), [os.path.dirname(path), *search_paths])
                except GinUsageError:
                    continue  # gin itself reports the missing include with its own message
                for k, v in _required_macros(sub, search_paths, seen).items():
                    found.setdefault(k, v)
    return found


@dataclass(frozen=True)
class ParsedGin:
    files: tuple[str, ...]
    bindings: tuple[str, ...]
    search_paths: tuple[str, ...]


def parse_gin(
    gin_files: Sequence[str],
    bindings: Sequence[str] = (),
    search_paths: Sequence[str] = (),
    finalize: bool = True,
) -> ParsedGin:
    """Parses gin files and bindings with clear errors; checks REQUIRED macros.

    Every configurable that the files name must already be imported.
    """
    paths = list(search_paths) + [p for p in default_search_paths() if p not in search_paths]
    for p in paths:
        gin.add_config_file_search_path(p)
    resolved = [resolve_gin_file(f, paths) for f in gin_files]
    gin.clear_config()
    for f in resolved:
        try:
            gin.parse_config_file(f)
        except OSError as e:
            raise GinUsageError(f"In gin file {f}: {e}. Gin search path: {paths}.") from e
        except (ValueError, SyntaxError, NameError, TypeError) as e:
            raise GinUsageError(f"In gin file {f}: {e}") from e
    for b in bindings:
        try:
            gin.parse_config(b)
        except Exception as e:  # gin raises several types for bad bindings
            raise GinUsageError(f"Bad gin binding {b!r}: {e}") from e
    required: dict[str, str] = {}
    for f in resolved:
        for k, v in _required_macros(f, paths, set()).items():
            required.setdefault(k, v)
    for macro, declared_in in required.items():
        try:
            value = gin.query_parameter(f"%{macro}")
        except ValueError:
            continue
        if str(value) == "%gin.REQUIRED":
            raise GinUsageError(
                f"Gin macro {macro} is required by {declared_in} but was not set. "
                f"Set it with --gin.{macro}=VALUE or --gin_bindings='{macro} = VALUE'."
            )
    if finalize:
        gin.finalize()
    return ParsedGin(tuple(resolved), tuple(bindings), tuple(paths))


def write_operative_config(workdir: str, stage: str, started: bool = False) -> str | None:
    """Writes the gin config to WORKDIR/config.gin (and a per-stage copy); host 0.

    started=True (at stage start): the whole parsed config (`gin.config_str`), since no
    configurable has run yet; otherwise (at the end) gin's operative config, which
    replaces it. A run that dies in between leaves the parsed one."""
    import jax

    if jax.process_index() != 0:
        return None
    if started:
        text = gin.config_str()
        header = (
            f"# Gin config of `rlaif-jax {stage}` as parsed at its start (the stage has not "
            "finished: the operative config replaces this file when it does).\n"
        )
    else:
        text = gin.operative_config_str()
        header = f"# Operative gin config of `rlaif-jax {stage}`.\n"
    for name in ("config.gin", f"config_{stage}.gin"):
        artifacts.atomic_write(fs.join(workdir, name), header + text)
    return fs.join(workdir, "config.gin")


def _binding_scope(binding_scope: str, used_scope: str, bound_scopes: set[str]) -> bool:
    """Whether a binding made in `binding_scope` is the one gin applies in `used_scope`:
    gin takes the longest prefix of the used scope's components that has a binding."""
    parts = used_scope.split("/") if used_scope else []
    prefixes = ["/".join(parts[:i]) for i in range(len(parts) + 1)]
    applied = [p for p in prefixes if p in bound_scopes]
    return bool(applied) and applied[-1] == binding_scope


def unused_bindings() -> list[str]:
    """Bindings of the parsed config that no configurable call used ("scope/name.param"),
    from gin's operative config (which lists only bound values a call took). Call after
    the stages ran: a non-empty list means a gin file configures nothing it claims to."""
    bindings = {  # {(scope, selector): {param: value}}; the CLI itself reads WORKDIR
        k: v for k, v in gin.config._CONFIG.items() if k != (CLI_WORKDIR_MACRO, "gin.macro")
    }
    operative = gin.config._OPERATIVE_CONFIG
    bound: dict[tuple[str, str], set[str]] = {}
    for (scope, selector), params in bindings.items():
        for param in params:
            bound.setdefault((selector, param), set()).add(scope)
    unused = []
    for (scope, selector), params in bindings.items():
        for param in params:
            scopes = bound[(selector, param)]
            used = any(
                sel == selector and param in used_params and _binding_scope(scope, s, scopes)
                for (s, sel), used_params in operative.items()
            )
            if not used:
                name = selector if selector != "gin.macro" else ""
                shown = f"{scope}/" if scope and name else ""
                unused.append(f"{shown}{name}.{param}" if name else scope)
    return sorted(unused)


def all_gin_files(roots: Iterable[str] | None = None) -> list[str]:
    """Every .gin file under the search roots (used by tests that parse them all)."""
    out = []
    for root in roots or default_search_paths():
        for dirpath, _, files in os.walk(root):
            out += [os.path.join(dirpath, f) for f in files if f.endswith(".gin")]
    return sorted(set(out))

"""The package's layer rules, read from its imports (issue 19: "the layer rules hold").

Face (CLI, gin wiring, pipeline, tools) -> Stages -> shared stage support -> Core / Data
-> Base. Every module under rlaif_jax/ is parsed (ast, no import), every import
statement counts (module level, inside functions, under TYPE_CHECKING, and
`importlib.import_module("...")` with a literal name), and `check` lists each forbidden
arrow. `check` is a pure function over an import graph, so the tests below also feed
it synthetic graphs holding each arrow the issue names and assert that each is caught.

Layers (by module; a package covers its submodules):
  Face     cli, __main__, gin_utils, configurables, pipeline, runtime, host_malloc, bench,
           sweep, sweep_table, paper_tables (+ paper_table_render, paper_numbers): they parse
           flags and gin, set up processes and wire stages (a table step runs its rows'
           stages, as the pipeline does).
  Stages   stage packages sft, reward, export, pair_sampling, labeling, rl, evaluation,
           toy; their entry modules are the ones `cli.STAGES` names.
  Support  artifacts, model_artifact, policy_decode, rates, report_sections: what several
           stages share (completion markers, saved models, policy decoding, rates with
           intervals, report.md sections).
  Core     models, decoding, sharding, train.
  Data     data.
  Base     rlaif_jax (the package itself), fs (the I/O layer for user paths, atomic
           writes): import nothing of rlaif_jax.

Rules:
  (a) nothing below Face imports Face;
  (b) no module imports a stage entry module except Face;
  (c) Core never imports Data, a stage, support, toy or Face;
  (d) Data never imports a stage, support, toy or Face;
  (s) support never imports a stage, toy or Face; Base imports nothing of rlaif_jax;
  (e) models/ never sees a Mesh: no jax.sharding, no name `Mesh`/`NamedSharding`, and of
      rlaif_jax.sharding only the logical axis names (sharding.axes);
  (f) a stage package imports another only along `STAGE_ALLOW` (documented there), and
      the graph of stage-package arrows is acyclic;
  (g) the real path never imports rlaif_jax.toy: only toy itself and Face (gin wiring,
      bench presets) do;
  (u) every module belongs to a layer (a new module must be placed in one).
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import subprocess
import sys
from collections.abc import Iterable, Mapping

import pytest

PKG = "rlaif_jax"
ROOT = pathlib.Path(__file__).resolve().parents[2] / PKG

FACE = ("cli", "__main__", "gin_utils", "configurables", "pipeline", "runtime", "bench", "bench_rl")
FACE += (
    "host_malloc",
    "sweep",
    "sweep_table",
    "paper_tables",
    "paper_table_render",
    "paper_numbers",
)
STAGE_PACKAGES = ("sft", "reward", "export", "pair_sampling", "labeling", "rl", "evaluation")
STAGE_PACKAGES += ("toy",)
SUPPORT = ("artifacts", "model_artifact", "policy_decode", "rates", "report_sections")
CORE = ("models", "decoding", "sharding", "train")
DATA = ("data",)
BASE = ("fs",)

# Stage package -> stage package arrows that are allowed, and why. Everything else
# between stage packages is forbidden; a shared piece moves down to support or Core.
STAGE_ALLOW: dict[tuple[str, str], str] = {
    ("evaluation", "labeling"): "the AI judge of win rates is the labeling library's Labeler",
    ("rl", "labeling"): "d-RLAIF scores responses with the labeling library (direct, scoring)",
    ("toy", "labeling"): "the toy labeler is trained on the labeling library's prompts",
}

# Names a models/ module may not mention (rule e).
MESH_NAMES = frozenset({"Mesh", "NamedSharding"})


@dataclasses.dataclass(frozen=True)
class Violation:
    rule: str
    module: str
    target: str
    why: str

    def __str__(self) -> str:
        return f"({self.rule}) {self.module} -> {self.target}: {self.why}"


def _short(name: str) -> str:
    return name[len(PKG) + 1 :] if name.startswith(PKG + ".") else name


def _top(name: str) -> str | None:
    """First component under rlaif_jax ('' for the package itself); None outside it."""
    if name == PKG:
        return ""
    if not name.startswith(PKG + "."):
        return None
    return name[len(PKG) + 1 :].split(".")[0]


def layer_of(name: str) -> str | None:
    top = _top(name)
    if top is None:
        return None
    if top == "" or top in BASE:
        return "base"
    for layer, tops in (
        ("face", FACE),
        ("stage", STAGE_PACKAGES),
        ("support", SUPPORT),
        ("core", CORE),
        ("data", DATA),
    ):
        if top in tops:
            return layer
    return None


def stage_package(name: str) -> str | None:
    top = _top(name)
    return top if top in STAGE_PACKAGES else None


def _covers(target: str, module: str) -> bool:
    """`target` names `module` or a package holding it (importing a package runs it)."""
    return target == module or module.startswith(target + ".")


def _find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if color.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in color:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = 2
        return None

    for node in sorted(edges):
        if node not in color:
            found = visit(node)
            if found:
                return found
    return None


def check(
    imports: Mapping[str, Iterable[str]],
    stage_entries: Iterable[str],
    mentions: Mapping[str, Iterable[str]] | None = None,
    allow: Mapping[tuple[str, str], str] = STAGE_ALLOW,
) -> list[Violation]:
    """Every forbidden arrow of an import graph.

    imports: module -> the dotted names it imports (modules, or `module.symbol` for
      `from module import symbol`; names outside rlaif_jax such as jax.sharding count for
      rule e). stage_entries: the stage entry modules (`cli.STAGES`). mentions: module ->
      identifiers it uses (Names and attribute names), for rule e.
    """
    entries = set(stage_entries)
    mentions = mentions or {}
    out: list[Violation] = []
    stage_edges: dict[str, set[str]] = {}
    for module in sorted(imports):
        src = layer_of(module)
        if src is None:
            out.append(Violation("u", module, "-", "module is in no layer; place it in one"))
            continue
        for target in sorted(set(imports[module])):
            if _top(module) == "models" and _covers("jax.sharding", target):
                out.append(Violation("e", module, target, "models never see a Mesh"))
                continue
            dst = layer_of(target)
            if dst is None:
                if _top(target) is not None:  # rlaif_jax.<unknown>
                    out.append(Violation("u", module, target, "target is in no layer"))
                continue
            if _covers(target, module):
                continue  # a module and its own package(s)
            v = _rule_for(module, src, target, dst, entries, allow)
            if v:
                out.append(v)
            sp, tp = stage_package(module), stage_package(target)
            if sp and tp and sp != tp:
                stage_edges.setdefault(sp, set()).add(tp)
        if _top(module) == "models":
            used = MESH_NAMES & set(mentions.get(module, ()))
            for name in sorted(used):
                out.append(Violation("e", module, name, "models never mention a Mesh"))
    cycle = _find_cycle(stage_edges)
    if cycle:
        out.append(Violation("f", cycle[0], " -> ".join(cycle), "stage packages form a cycle"))
    return out


def _rule_for(module, src, target, dst, entries, allow) -> Violation | None:
    # The most specific rule first, so each arrow is reported once.
    if src != "face" and dst == "face":
        return Violation("a", module, target, "only Face imports Face")
    if src != "face" and target in entries:
        return Violation("b", module, target, "a stage entry module is imported")
    if _top(target) == "toy" and _top(module) != "toy" and src != "face":
        return Violation("g", module, target, "the real path never imports the toy world")
    if src == "base":
        return Violation("s", module, target, "Base imports nothing of rlaif_jax")
    if src == "core" and dst in ("data", "stage", "support"):
        return Violation("c", module, target, f"Core never imports {dst}")
    if src == "data" and dst in ("stage", "support"):
        return Violation("d", module, target, f"Data never imports {dst}")
    if src == "support" and dst == "stage":
        return Violation("s", module, target, "shared support never imports a stage")
    if _top(module) == "models" and _top(target) == "sharding":
        if target not in (f"{PKG}.sharding", f"{PKG}.sharding.axes"):
            if not target.startswith(f"{PKG}.sharding.axes."):
                return Violation("e", module, target, "models import only sharding.axes")
    sp, tp = stage_package(module), stage_package(target)
    if sp and tp and sp != tp and (sp, tp) not in allow:
        return Violation("f", module, target, f"stage package {sp} imports stage package {tp}")
    return None


# ----------------------------------------------------------------------------- reading


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def read_module(
    name: str, tree: ast.AST, is_package: bool, known: set[str]
) -> tuple[set[str], set[str]]:
    """(dotted names imported, identifiers mentioned) of one parsed module."""
    imports: set[str] = set()
    mentions: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                full = f"{mod}.{a.name}"
                # `from pkg import submodule` imports the submodule; a symbol counts as
                # its module (and, outside rlaif_jax, as module.symbol for rule e).
                imports.add(full if full in known or not mod.startswith(PKG) else mod)
                if not mod.startswith(PKG):
                    imports.add(mod)
                mentions.add(a.name)
        elif isinstance(node, ast.Call):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if called == "import_module" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    imports.add(arg.value)
        elif isinstance(node, ast.Name):
            mentions.add(node.id)
        elif isinstance(node, ast.Attribute):
            mentions.add(node.attr)
            if isinstance(node.value, ast.Name) and node.value.id == "jax":
                if node.attr == "sharding":
                    imports.add("jax.sharding")
    return imports, mentions


def read_package(root: pathlib.Path = ROOT):
    """(imports, mentions) of every module under `root`."""
    paths = sorted(root.rglob("*.py"))
    known = {module_name(p, root) for p in paths}
    imports, mentions = {}, {}
    for p in paths:
        name = module_name(p, root)
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        imports[name], mentions[name] = read_module(name, tree, p.name == "__init__.py", known)
    return imports, mentions


def stage_entry_modules(cli_path: pathlib.Path = ROOT / "cli.py") -> set[str]:
    """The modules `cli.STAGES` names, read from the dict literal in cli.py."""
    tree = ast.parse(cli_path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "STAGES" for t in targets):
            value = ast.literal_eval(node.value)
            return {v[0] if isinstance(v, tuple | list) else v for v in value.values()}
    raise AssertionError(f"{cli_path}: no STAGES dict literal")


# ----------------------------------------------------------------------------- real package


def test_stage_entries_are_read_from_cli():
    entries = stage_entry_modules()
    assert {"rlaif_jax.sft", "rlaif_jax.labeling.stage", "rlaif_jax.rl.stage"} <= entries
    assert all(layer_of(e) in ("stage", "face") for e in entries), entries


def test_reader_sees_function_level_and_relative_imports():
    src = (
        "import jax\n"
        "from . import sibling\n"
        "from ..data import batching\n"
        "def f():\n"
        "    from rlaif_jax.artifacts import atomic_write\n"
        "    import importlib\n"
        "    importlib.import_module('rlaif_jax.sft')\n"
        "    return jax.sharding.Mesh\n"
    )
    known = {"rlaif_jax.train.sibling", "rlaif_jax.data.batching", "rlaif_jax.artifacts"}
    imports, mentions = read_module("rlaif_jax.train.x", ast.parse(src), False, known)
    assert {
        "rlaif_jax.train.sibling",
        "rlaif_jax.data.batching",
        "rlaif_jax.artifacts",
        "rlaif_jax.sft",
        "jax.sharding",
    } <= imports
    assert "Mesh" in mentions


def test_the_package_keeps_the_layer_rules():
    imports, mentions = read_package()
    assert len(imports) > 50  # the whole package was read
    bad = check(imports, stage_entry_modules(), mentions)
    assert not bad, "forbidden imports:\n" + "\n".join(map(str, bad))


def test_allow_list_is_acyclic_and_never_reaches_toy():
    assert _find_cycle({a: {b for (x, b) in STAGE_ALLOW if x == a} for a, _ in STAGE_ALLOW}) is None
    assert all(b != "toy" and a in STAGE_PACKAGES for a, b in STAGE_ALLOW)


# ----------------------------------------------------------------------------- synthetic graphs

ENTRIES = {
    "rlaif_jax.sft",
    "rlaif_jax.reward",
    "rlaif_jax.labeling.stage",
    "rlaif_jax.evaluation.stage",
    "rlaif_jax.pair_sampling",
    "rlaif_jax.toy.labeler_bootstrap",
    "rlaif_jax.pipeline",
}

# A small graph that keeps every rule: Face -> stages -> support -> Core / Data.
CLEAN = {
    "rlaif_jax.cli": {"rlaif_jax.gin_utils", "rlaif_jax.sft", "rlaif_jax.toy.presets"},
    "rlaif_jax.gin_utils": {"rlaif_jax.artifacts"},
    "rlaif_jax.pipeline": {"rlaif_jax.cli"},
    "rlaif_jax.sft": {"rlaif_jax.train.supervised", "rlaif_jax.data.batching"},
    "rlaif_jax.reward": {"rlaif_jax.train.losses", "rlaif_jax.model_artifact"},
    "rlaif_jax.pair_sampling": {"rlaif_jax.policy_decode", "rlaif_jax.artifacts"},
    "rlaif_jax.labeling.stage": {"rlaif_jax.labeling.alignment", "rlaif_jax.data.tasks"},
    "rlaif_jax.labeling.alignment": {"rlaif_jax.rates"},
    "rlaif_jax.evaluation.stage": {"rlaif_jax.evaluation.samples", "rlaif_jax.labeling.labeler"},
    "rlaif_jax.evaluation.samples": {"rlaif_jax.artifacts"},
    "rlaif_jax.labeling.labeler": set(),
    "rlaif_jax.toy.labeler_bootstrap": {"rlaif_jax.train.losses", "rlaif_jax.labeling.render"},
    "rlaif_jax.toy.presets": {"rlaif_jax.models.config"},
    "rlaif_jax.labeling.render": set(),
    "rlaif_jax.policy_decode": {"rlaif_jax.decoding.sample", "rlaif_jax.data.layout"},
    "rlaif_jax.model_artifact": {"rlaif_jax.sharding.model_params", "rlaif_jax.artifacts"},
    "rlaif_jax.artifacts": {"rlaif_jax.fs"},
    "rlaif_jax.fs": set(),
    "rlaif_jax.rates": set(),
    "rlaif_jax.train.supervised": {"rlaif_jax.train.loop", "rlaif_jax.sharding.model_params"},
    "rlaif_jax.train.loop": {"rlaif_jax.sharding.partition", "jax.sharding"},
    "rlaif_jax.train.losses": {"rlaif_jax.models.model"},
    "rlaif_jax.sharding.model_params": {"rlaif_jax.models.model", "jax.sharding"},
    "rlaif_jax.sharding.partition": {"jax.sharding", "jax.sharding.Mesh"},
    "rlaif_jax.models.model": {"rlaif_jax.models.transformer", "jax"},
    "rlaif_jax.models.transformer": {"rlaif_jax.sharding.axes", "flax.linen"},
    "rlaif_jax.models.config": set(),
    "rlaif_jax.decoding.sample": {"rlaif_jax.models.model", "rlaif_jax.sharding.model_params"},
    "rlaif_jax.data.batching": {"rlaif_jax.data.vocab"},
    "rlaif_jax.data.vocab": {"rlaif_jax.fs"},
    "rlaif_jax.data.layout": {"rlaif_jax.data.batching"},
    "rlaif_jax.data.tasks": set(),
}


def _with(edges: Mapping[str, set[str]]) -> dict[str, set[str]]:
    graph = {k: set(v) for k, v in CLEAN.items()}
    for module, targets in edges.items():
        graph.setdefault(module, set()).update(targets)
    return graph


def test_clean_graph_passes():
    assert check(CLEAN, ENTRIES, {"rlaif_jax.models.model": {"jnp", "Transformer"}}) == []


# Each arrow issue 19 lists, and the rule that must catch it.
ISSUE_ARROWS = [
    ("rlaif_jax.labeling.stage", "rlaif_jax.evaluation.alignment", "f"),
    ("rlaif_jax.pair_sampling", "rlaif_jax.evaluation.samples", "f"),
    ("rlaif_jax.toy.labeler_bootstrap", "rlaif_jax.sft", "b"),
    ("rlaif_jax.train.supervised", "rlaif_jax.data.batching", "c"),
    ("rlaif_jax.train.supervised", "rlaif_jax.artifacts", "c"),
    ("rlaif_jax.models.model", "jax.sharding", "e"),
    ("rlaif_jax.models.model", "jax.sharding.Mesh", "e"),
]

# Further forbidden arrows of the same rules.
OTHER_ARROWS = [
    ("rlaif_jax.train.losses", "rlaif_jax.cli", "a"),
    ("rlaif_jax.labeling.stage", "rlaif_jax.gin_utils", "a"),
    ("rlaif_jax.evaluation.stage", "rlaif_jax.labeling.stage", "b"),
    ("rlaif_jax.decoding.sample", "rlaif_jax.labeling.render", "c"),
    ("rlaif_jax.sharding.model_params", "rlaif_jax.model_artifact", "c"),
    ("rlaif_jax.data.vocab", "rlaif_jax.artifacts", "d"),
    ("rlaif_jax.data.tasks", "rlaif_jax.labeling.render", "d"),
    ("rlaif_jax.policy_decode", "rlaif_jax.evaluation.samples", "s"),
    ("rlaif_jax.fs", "rlaif_jax.data.vocab", "s"),
    ("rlaif_jax.models.model", "rlaif_jax.sharding.partition", "e"),
    ("rlaif_jax.models.transformer", "rlaif_jax.sharding.model_params", "e"),
    ("rlaif_jax.labeling.labeler", "rlaif_jax.evaluation.samples", "f"),
    ("rlaif_jax.reward", "rlaif_jax.labeling.render", "f"),
    ("rlaif_jax.sft", "rlaif_jax.toy.presets", "g"),
    ("rlaif_jax.model_artifact", "rlaif_jax.toy.presets", "g"),
    ("rlaif_jax.train.loop", "rlaif_jax.toy", "g"),
    ("rlaif_jax.new_thing", "rlaif_jax.artifacts", "u"),
    ("rlaif_jax.sft", "rlaif_jax.new_thing", "u"),
]


@pytest.mark.parametrize("module,target,rule", ISSUE_ARROWS + OTHER_ARROWS)
def test_each_forbidden_arrow_is_caught(module, target, rule):
    bad = check(_with({module: {target}}), ENTRIES)
    assert any(v.module == module and v.rule == rule for v in bad), (module, target, bad)


def test_models_mentioning_mesh_is_caught():
    """`jax.sharding.Mesh` written without importing it (e.g. a type hint) counts too."""
    bad = check(CLEAN, ENTRIES, {"rlaif_jax.models.model": {"Mesh", "jnp"}})
    assert [(v.rule, v.module, v.target) for v in bad] == [("e", "rlaif_jax.models.model", "Mesh")]
    src = "import jax\ndef f(mesh: 'x'):\n    return jax.sharding.NamedSharding(mesh, None)\n"
    imports, mentions = read_module("rlaif_jax.models.x", ast.parse(src), False, set())
    bad = check(_with({"rlaif_jax.models.x": imports}), ENTRIES, {"rlaif_jax.models.x": mentions})
    assert {v.target for v in bad if v.rule == "e"} == {"jax.sharding", "NamedSharding"}


def test_a_stage_package_cycle_is_caught_even_when_allowed():
    allow = {**STAGE_ALLOW, ("labeling", "evaluation"): "a mistake"}
    graph = _with({"rlaif_jax.labeling.stage": {"rlaif_jax.evaluation.samples"}})
    bad = check(graph, ENTRIES, allow=allow)
    assert [v.rule for v in bad] == ["f"] and "cycle" in bad[0].why


def test_allowed_stage_arrows_pass():
    graph = _with({"rlaif_jax.rl.rewards": {"rlaif_jax.labeling.direct"}})
    graph["rlaif_jax.labeling.direct"] = set()
    assert check(graph, ENTRIES) == []


def test_the_real_path_never_imports_the_toy_package():
    """DESIGN §2: every stage, the pipeline and the CLI import without `rlaif_jax.toy`
    (the toy world comes in only through its gin files), and the toy presets with it."""
    code = (
        "import sys\n"
        "import rlaif_jax.cli, rlaif_jax.pipeline, rlaif_jax.sft, rlaif_jax.reward\n"
        "import rlaif_jax.labeling.stage, rlaif_jax.labeling.scoring, rlaif_jax.pair_sampling\n"
        "import rlaif_jax.rl.stage, rlaif_jax.rl.roles, rlaif_jax.rl.runner\n"
        "import rlaif_jax.evaluation.stage, rlaif_jax.data.tasks, rlaif_jax.bench\n"
        "from rlaif_jax.models.config import PRESETS\n"
        "print(sorted(m for m in sys.modules if m.startswith('rlaif_jax.toy')))\n"
        "print(sorted(p for p in PRESETS if p.startswith('toy_')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout

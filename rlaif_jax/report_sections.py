"""report.md as a main report plus named sections that other stages own.

The evaluation stage writes the main report; `rlaif-jax table` steps each own one
section (a paper table). Each section sits between `<!-- section:NAME -->` and
`<!-- /section:NAME -->`, so a step rewrites its own section in place and the
evaluation stage, rewriting the main report, keeps every section already there.
"""

from __future__ import annotations

import os
import re

from rlaif_jax import artifacts, fs

REPORT_FILE = "report.md"
_SECTION_RE = re.compile(r"<!-- section:([\w.-]+) -->\n.*?<!-- /section:\1 -->\n?", re.DOTALL)


def _wrap(name: str, body: str) -> str:
    return f"<!-- section:{name} -->\n{body.rstrip()}\n<!-- /section:{name} -->\n"


def sections(text: str) -> dict[str, str]:
    """{name: the whole marked block} of every section in report text, in order."""
    return {m.group(1): m.group(0) for m in _SECTION_RE.finditer(text)}


def main_part(text: str) -> str:
    """The report text without its sections."""
    return _SECTION_RE.sub("", text).rstrip()


def _read(report_dir: str) -> str:
    path = os.path.join(report_dir, REPORT_FILE)
    return fs.read_text(path) if fs.isfile(path) else ""


def _write(report_dir: str, main: str, blocks: dict[str, str]) -> str:
    path = os.path.join(report_dir, REPORT_FILE)
    parts = [main.rstrip()] if main.strip() else []
    parts += [b.rstrip() for b in blocks.values()]
    artifacts.atomic_write(path, "\n\n".join(parts) + "\n")
    return path


def write_main(report_dir: str, main: str) -> str:
    """Replaces the main report, keeping every existing section after it."""
    return _write(report_dir, main, sections(_read(report_dir)))


def upsert_section(report_dir: str, name: str, body: str) -> str:
    """Writes section `name` (replacing its old text, else appended), keeping the rest."""
    text = _read(report_dir)
    blocks = sections(text)
    blocks[name] = _wrap(name, body)
    return _write(report_dir, main_part(text), blocks)

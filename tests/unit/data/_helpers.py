"""The data tests' fixture files (tests/fixtures) and a JSONL writer."""

import json
import os

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "fixtures")
TLDR = os.path.join(FIX, "tldr_train.jsonl")
TLDR_BAD = os.path.join(FIX, "tldr_bad.jsonl")
COMP = os.path.join(FIX, "comparisons.jsonl")
HELPFUL = os.path.join(FIX, "hh_helpful_base_train.jsonl.gz")
HARMLESS = os.path.join(FIX, "hh_harmless_base_train.jsonl.gz")
HH_BAD = os.path.join(FIX, "hh_bad.jsonl.gz")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)

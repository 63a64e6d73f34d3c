"""A stage used only by the CLI tests: records what gin passed it."""

import json
import os

import gin

CALLS = []


@gin.configurable("cli_test_stage")
def run_stage(workdir: str = "/tmp/unused", value=None, scale: int = 1, fail: bool = False):
    CALLS.append({"workdir": workdir, "value": value, "scale": scale})
    if fail:  # a stage that dies mid-run
        raise RuntimeError("cli_test_stage failed")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "out.json"), "w") as f:
        json.dump({"value": value, "scale": scale}, f)

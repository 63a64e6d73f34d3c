"""Runs `rlaif-jax ARGS...` in a fresh process as a user would (8 fake CPU devices) and
reports what the run touched: argv: out.json then the CLI arguments.

out.json: {"rc": exit code, "toy_modules": [rlaif_jax.toy.* modules imported],
"unused_bindings": gin bindings no stage used (`gin_utils.unused_bindings`)}.
"""

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    import jax

    jax.config.update("jax_threefry_partitionable", True)
    from rlaif_jax import cli, gin_utils

    out, argv = sys.argv[1], sys.argv[2:]
    rc = cli.main(argv)
    report = {
        "rc": rc,
        "toy_modules": sorted(m for m in sys.modules if m.startswith("rlaif_jax.toy")),
        "unused_bindings": gin_utils.unused_bindings() if rc == 0 else [],
    }
    with open(out, "w") as f:
        json.dump(report, f)
    return rc


if __name__ == "__main__":
    sys.exit(main())

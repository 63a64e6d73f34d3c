"""Orbax checkpoints: atomic, every N steps and at the end, keep K, exact resume.

A stage checkpoint directory (WORKDIR/<stage>/ckpt) is an orbax CheckpointManager
directory; each step holds three items:
  state   the whole TrainState (params, optimizer state, step, RNG)
  params  the model params alone (what other stages restore to initialise from it)
  meta    JSON: step, data-iterator position, last metrics
A params-only directory (`save_params`) holds just `params` at step 0. No pickle.

The directory may be local or a URI (gs://...): orbax takes it as is (through
`rlaif_jax.fs.abspath`, which makes only local paths absolute).

Saves are asynchronous (orbax's async CheckpointManager): `save` returns once the arrays
are copied off the devices, so training goes on (and may donate the state's buffers)
while the files are written in the background. A save first waits for the previous one;
`wait()` blocks until the last is committed, and `close()` waits too, so a run that ends,
stops or is preempted leaves its last checkpoint whole. A step directory appears only
once committed: a crash mid-save leaves the previous checkpoint the latest.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import jax

from rlaif_jax import fs

logger = logging.getLogger("rlaif_jax.train")

PyTree = Any


class CheckpointError(RuntimeError):
    """A checkpoint directory that is missing, empty or unreadable."""


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _abstract(tree: PyTree) -> PyTree:
    """ShapeDtypeStructs (with shardings) of a tree of arrays or structs."""

    def one(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(one, tree)


class Checkpointer:
    """Saves and restores a stage's TrainState + params + meta under `directory`."""

    def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True):
        ocp = _ocp()
        self.directory = fs.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self,
        step: int,
        state: PyTree,
        meta: dict,
        params: PyTree | None = None,
        wait: bool = False,
    ) -> None:
        """Starts saving `step` (after the previous save has finished) and returns once
        the arrays are off the devices; the files are written in the background unless
        `wait`. The step directory appears only when complete."""
        ocp = _ocp()
        self.wait()
        items = {
            "state": ocp.args.StandardSave(state),
            "params": ocp.args.StandardSave(state.params if params is None else params),
            "meta": ocp.args.JsonSave(meta),
        }
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        if wait:
            self.wait()

    def wait(self) -> None:
        """Blocks until the last save is committed (no-op when none is in flight)."""
        self.manager.wait_until_finished()

    def restore(self, state_target: PyTree, step: int | None = None) -> tuple[PyTree, dict]:
        """(state, meta) of `step` (default latest) onto `state_target`'s shardings."""
        ocp = _ocp()
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"No checkpoint to resume from in {self.directory}.")
        try:
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_abstract(state_target)),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:  # orbax raises many types for damaged files
            raise CheckpointError(
                f"Cannot restore step {step} from {self.directory} ({type(e).__name__}: {e}). "
                "The checkpoint is corrupt or from a different model: delete that step "
                "directory to resume from an earlier one, or the whole directory to restart."
            ) from e
        return out.state, dict(out.meta)

    def close(self) -> None:
        """Waits for an in-flight save, then releases the manager."""
        self.wait()
        self.manager.close()


def save_params(ckpt_dir: str, params: PyTree, meta: dict | None = None) -> None:
    """A params-only checkpoint (step 0): e.g. a bootstrapped labeler or an exported model."""
    ocp = _ocp()
    manager = ocp.CheckpointManager(
        fs.abspath(ckpt_dir), options=ocp.CheckpointManagerOptions(create=True)
    )
    manager.save(
        0,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta or {})
        ),
        force=True,
    )
    manager.wait_until_finished()
    manager.close()


def restore_params(ckpt_dir: str, target: PyTree, step: int | None = None) -> PyTree:
    """The `params` item of the latest (or given) step, onto `target`'s shapes/shardings.

    `target` is a params tree or ShapeDtypeStructs with shardings (nothing is allocated
    twice). Clear errors for a missing, empty or mismatched directory.
    """
    ocp = _ocp()
    ckpt_dir = fs.abspath(ckpt_dir)
    if not fs.isdir(ckpt_dir):
        raise CheckpointError(
            f"No checkpoint directory {ckpt_dir}: run the stage that writes it first."
        )
    manager = ocp.CheckpointManager(ckpt_dir)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"Checkpoint directory {ckpt_dir} holds no finished checkpoint.")
    try:
        out = manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(target)))
        )
    except Exception as e:
        raise CheckpointError(
            f"Cannot restore params of step {step} from {ckpt_dir} ({type(e).__name__}: {e}). "
            "Is it a checkpoint of this model config?"
        ) from e
    finally:
        manager.close()
    return out.params


class PreemptionHandler:
    """SIGTERM (TPU VM preemption) sets a flag; the loop saves and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler (tests in threads)
            self._previous = None

    def _handle(self, signum, frame):
        logger.warning("SIGTERM received: saving a checkpoint and exiting.")
        self.requested = True

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

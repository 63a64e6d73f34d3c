"""A `jax.profiler` trace of chosen steps of a training run.

`LoopSettings.profile_steps = (first, last)` (bound as `TrainSettings.profile_steps`,
`RLSettings.profile_steps`) traces steps first..last into WORKDIR/logs/<stage>/profile in
TensorBoard's profile-plugin layout (plugins/profile/<run>/<host>.xplane.pb), which
TensorBoard's Profile tab and XProf read. The directory may be a gs:// URI (the profiler
writes through TensorFlow's file systems).
"""

from __future__ import annotations

import logging

import jax

logger = logging.getLogger("rlaif_jax.train")


def check_profile_steps(steps, binding: str = "TrainSettings.profile_steps") -> None:
    """(first, last) with 1 <= first <= last, or None; else an error naming `binding`."""
    if steps is None:
        return
    ok = isinstance(steps, tuple | list) and len(steps) == 2
    ok = ok and all(isinstance(x, int) for x in steps) and 1 <= steps[0] <= steps[1]
    if not ok:
        raise ValueError(
            f"{binding} = {steps!r}: expected (first, last) step numbers with "
            "1 <= first <= last, e.g. (5, 8), or None."
        )


class StepProfiler:
    """A `jax.profiler` trace of steps first..last (1-based, inclusive) into `directory`
    (TensorBoard's profile plugin layout: plugins/profile/<run>/*.xplane.pb). A run that
    resumes inside the range traces the rest of it; one that resumes past it traces
    nothing."""

    def __init__(self, steps: tuple[int, int] | None, directory: str, stage: str):
        self.steps, self.directory, self.stage = steps, directory, stage
        self.active = False
        self.done = steps is None

    def before(self, step: int) -> None:
        """Called before step `step` is dispatched."""
        if self.done or self.active or not self.steps[0] <= step <= self.steps[1]:
            return
        jax.profiler.start_trace(self.directory)
        self.active = True
        logger.info("%s: profiling steps %d..%d into %s", self.stage, step, self.steps[1],
                    self.directory)  # fmt: skip

    def after(self, step: int, state) -> None:
        """Called after step `step` is dispatched: the trace stops once it has run."""
        if self.active and step >= self.steps[1]:
            jax.block_until_ready(state)
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            self.done = True

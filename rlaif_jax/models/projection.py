"""A weight projection with its backward written out: the form every backend runs fast.

`project(x, kernel, n)` contracts the last n dims of x [..., *IN] with the first n dims of
kernel [*IN, *OUT] -> [..., *OUT]: the q/k/v/o, gate/up/down and unembedding matmuls.

Why not `x @ kernel` under autodiff: JAX's transpose rule of a dot with batch-like
leading dims (x [B, L, D]) produces the kernel gradient as a dot against the *transposed*
output gradient, and XLA CPU then writes that gradient (often an element-wise fusion such
as SwiGLU's backward) transposed, element by element, and computes it twice (once per
consumer). The explicit rule below contracts the leading dims of x and dy directly
(dk = x^T dy over every leading dim), which XLA lays out without the transposed write.
On a 2-core CPU: the backward of one [8, 256, 512] x [512, 1536] projection fed by
SwiGLU's gradient took 33 ms instead of 92; the 4-layer d_model 512 train step 1.59 s
instead of 1.85 (bench/RESULTS.md). Values and gradients are autodiff's
(tests/unit/models/test_projection_logprob.py).
"""

from __future__ import annotations

import functools

import jax
from jax.ad_checkpoint import checkpoint_name


def _dims(lhs_axes, rhs_axes):
    return ((tuple(lhs_axes), tuple(rhs_axes)), ((), ()))


# The name `project`'s outputs carry for `jax.checkpoint` policies: remat's 'dots' policy
# saves them (a custom-VJP call is not a dot_general to `checkpoint_dots_*`).
CHECKPOINT_NAME = "projection"


def project(x, kernel, n: int = 1, out_dtype=None):
    """x [..., *IN] · kernel [*IN, *OUT] over the n IN dims -> [..., *OUT].

    out_dtype: the dot's accumulation / result dtype (`preferred_element_type`; None =
    the inputs'), e.g. float32 logits from bf16 activations. Gradients come back in the
    dtypes of x and kernel. The output is named CHECKPOINT_NAME for remat policies.
    """
    return checkpoint_name(_project(x, kernel, n, out_dtype), CHECKPOINT_NAME)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _project(x, kernel, n, out_dtype):
    lead = x.ndim - n
    return jax.lax.dot_general(
        x, kernel, _dims(range(lead, x.ndim), range(n)), preferred_element_type=out_dtype
    )


def _project_fwd(x, kernel, n, out_dtype):
    return _project(x, kernel, n, out_dtype), (x, kernel)


def _project_bwd(n, out_dtype, residuals, dy):
    x, kernel = residuals
    lead = x.ndim - n
    n_out = kernel.ndim - n
    # dx [..., *IN] = dy [..., *OUT] · kernel^T over OUT.
    dx = jax.lax.dot_general(
        dy,
        kernel,
        _dims(range(lead, lead + n_out), range(n, kernel.ndim)),
        preferred_element_type=out_dtype,
    )
    # dkernel [*IN, *OUT] = x^T · dy over every leading dim.
    dk = jax.lax.dot_general(
        x, dy, _dims(range(lead), range(lead)), preferred_element_type=out_dtype
    )
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_project.defvjp(_project_fwd, _project_bwd)

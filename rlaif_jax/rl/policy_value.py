"""How the trainable tree and the frozen tree compute the policy and the value in RL.

Shapes: N rollouts, L = Lp + T packed length, T response tokens, V vocab, D model.

Four layouts of the learner's `params = {"policy", "value"}`, all sharing one frozen
tree (the anchor, the SFT params):

| lora | value trunk | params["policy"]          | params["value"]                                 |
| ---- | ----------- | ------------------------- | ----------------------------------------------- |
| no   | own         | full LM copy              | full scalar-head copy (trunk + score_head)      |
| no   | policy's    | full LM copy              | {"score_head"}                                  |
| yes  | own         | adapters on the frozen LM | {"adapters", "score_head"} on the frozen trunk  |
| yes  | policy's    | adapters on the frozen LM | {"score_head"}                                  |

With LoRA the frozen tree is the base of both policy and value and the anchor itself, so
no copy of the model exists beyond the SFT params, and the optimizer state covers the
adapters and the head only. With the value head on the policy trunk, one forward pass
gives logits and values (the value loss then also trains the policy's trunk or adapters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rlaif_jax.models import lora as lora_lib
from rlaif_jax.models.logprob import token_logprobs
from rlaif_jax.models.lora import LoRAConfig
from rlaif_jax.rl import rollout

PyTree = Any
Array = jax.Array


class LoRAModel:
    """A flax model whose `apply({"params": {"base", "adapters"}}, ...)` runs `module`
    on the base params with the adapters in its 'lora' collection (`models.lora`), so
    code written against `module.apply({"params": p}, ...)` runs the adapted model."""

    def __init__(self, module: Any, lora: LoRAConfig):
        self.module, self.lora = module, lora

    def apply(self, variables: dict, *args, **kwargs):
        p = variables["params"]
        return self.module.apply(
            lora_lib.variables(p["base"], p["adapters"], self.lora), *args, **kwargs
        )


def _trunk(frozen: PyTree, head: PyTree) -> PyTree:
    """The frozen LM's trunk under a scalar head (a dict of references: no copy)."""
    return {**{k: v for k, v in frozen.items() if k != "unembed"}, "score_head": head}


def _is_final_norm(module: Any, method_name: str) -> bool:
    return module.name == "final_norm" and method_name == "__call__"


@dataclasses.dataclass(frozen=True)
class PolicyValue:
    """The policy / value / anchor forward passes of one params layout (module table).

    policy_model: the LM (`Transformer(config, 'lm')`); value_model: the scalar-head model
    (unused when `value_on_policy_trunk`); lora: adapters instead of full copies."""

    policy_model: Any
    value_model: Any
    lora: LoRAConfig | None = None
    value_on_policy_trunk: bool = False

    def _policy(self, params: PyTree, frozen: PyTree) -> tuple[Any, PyTree]:
        if self.lora is None:
            return self.policy_model, params["policy"]
        return LoRAModel(self.policy_model, self.lora), {
            "base": frozen,
            "adapters": params["policy"],
        }

    def outputs(
        self, params: PyTree, frozen: PyTree, packed: rollout.Packed, tokens: Array
    ) -> tuple[Array | None, Array | None, Array | None]:
        """(log π(a_t|x_t) [N, T], logits [N, T, V], V(x_t) [N, T]) teacher-forced; the
        policy's two are None when `params` has no 'policy', the values None without
        'value' (a part that runs on devices of its own, `rl.placement`)."""
        if self.value_on_policy_trunk:
            model, policy = self._policy(params, frozen)
            return self._shared(model, policy, params["value"]["score_head"], packed, tokens)
        logp = logits = values = None
        if "policy" in params:
            model, policy = self._policy(params, frozen)
            logp, logits = rollout.policy_outputs(model, policy, packed, tokens)
        if "value" in params and self.lora is None:
            values = rollout.value_outputs(self.value_model, params["value"], packed)
        elif "value" in params:
            value = params["value"]
            base = _trunk(frozen, value["score_head"])
            values = rollout.value_outputs(
                LoRAModel(self.value_model, self.lora),
                {"base": base, "adapters": value["adapters"]},
                packed,
            )
        return logp, logits, values

    def _shared(self, model, policy, head, packed, tokens):
        """One pass: logits at the states and the value head on the same final hidden
        states (the trunk's `final_norm` output, captured)."""
        (logits, _), state = model.apply(
            {"params": policy},
            packed.tokens,
            attention_mask=packed.attention_mask,
            logits_positions=packed.state_positions,
            capture_intermediates=_is_final_norm,
        )
        captured = state.get("intermediates", {}).get("final_norm")
        if captured is None:
            raise ValueError(
                "value_on_policy_trunk needs a model with a `final_norm` (models.transformer"
                f".Transformer); {type(self.policy_model).__name__} has none."
            )
        hidden = captured["__call__"][0]  # [N, L, D]
        h = jnp.take_along_axis(hidden, packed.state_positions[..., None], axis=1)  # [N, T, D]
        values = (h.astype(jnp.float32) @ head["kernel"].astype(jnp.float32))[..., 0]
        return token_logprobs(logits, tokens), logits, values

    def anchor_logprobs(self, frozen: PyTree, packed: rollout.Packed, tokens: Array) -> Array:
        """log π_anchor(a_t|x_t) [N, T]: the frozen tree as a plain LM."""
        return rollout.policy_outputs(self.policy_model, frozen, packed, tokens)[0]


def lora_merger(lora: LoRAConfig, dtype: Any) -> Callable[[PyTree, PyTree], PyTree]:
    """`fn(frozen, adapters)`: the frozen LM tree with the adapted kernels replaced by
    fresh W + (alpha/r)·a·b kernels in `dtype`, placed like the base's (one jit); every
    other leaf is the frozen tree's own array, not a copy."""
    jitted: dict = {}

    def fn(frozen, adapters):
        shardings = lora_lib.kernel_shardings(frozen, adapters)
        key = (jax.tree.structure(shardings), tuple(jax.tree.leaves(shardings)))
        if key not in jitted:
            jitted[key] = jax.jit(
                lambda base, ad: lora_lib.merged_kernels(base, ad, lora, dtype),
                out_shardings=shardings,
            )
        return lora_lib.with_kernels(frozen, jitted[key](frozen, adapters))

    return fn


def lora_sampler(sample_fn: Callable[..., Any], roles: Any, lora: LoRAConfig, dtype):
    """`fn(adapters, prompt_tokens, prompt_lengths, rng)` over a sampler
    `sample_fn(params, ...)` (`decoding.sample` / `decoding.buckets`): each call merges
    the adapters into `roles.anchor` (`lora_merger`, in the compute `dtype`: the copy the
    sampler would cast to anyway), so decode steps read plain kernels instead of adding
    low-rank products."""
    merge = lora_merger(lora, dtype)

    def fn(adapters, prompt_tokens, prompt_lengths, rng):
        return sample_fn(merge(roles.anchor, adapters), prompt_tokens, prompt_lengths, rng)

    return fn


def init_trainable(
    config: Any,
    sft_params: PyTree,
    mesh: Any,
    rules: Any,
    lora: LoRAConfig | None,
    value_on_policy_trunk: bool,
    seed: int = 0,
) -> tuple[PyTree, PyTree]:
    """(params {"policy", "value"}, their shardings) of the layout `lora` /
    `value_on_policy_trunk` name (table above), born sharded on `mesh` under `rules`.

    Adapters: `models.lora.init_fn` (b = 0), seeded apart for policy and value. The
    value head: the scalar model's own head initialiser (only the head is computed).
    Without LoRA the policy is a fresh copy of `sft_params` (which stays the anchor)."""
    from rlaif_jax.models import model as model_lib
    from rlaif_jax.sharding import model_params, partition

    rng = jax.random.PRNGKey(seed)
    _, scalar_shardings = model_params.abstract_params(config, mesh, rules, "scalar")
    head_shardings = scalar_shardings["score_head"]
    scalar_init = model_lib.init_fn(config, "scalar")
    with partition.sharding_context(mesh, rules):
        head = jax.jit(
            lambda r: model_lib.unbox(scalar_init(r))["score_head"], out_shardings=head_shardings
        )(jax.random.fold_in(rng, 2))
    if lora is None:
        lm_shardings = jax.tree.map(lambda x: x.sharding, sft_params)
        with partition.sharding_context(mesh, rules):
            policy = jax.jit(lambda p: p, out_shardings=lm_shardings)(sft_params)  # a copy
        params = {"policy": policy, "value": {"score_head": head}}
        shardings = {"policy": lm_shardings, "value": {"score_head": head_shardings}}
        return params, shardings
    init = lora_lib.init_fn(config, lora)
    policy, policy_sh = partition.init_sharded(init, mesh, rules, jax.random.fold_in(rng, 0))
    params = {"policy": policy, "value": {"score_head": head}}
    shardings = {"policy": policy_sh, "value": {"score_head": head_shardings}}
    if not value_on_policy_trunk:
        adapters, adapters_sh = partition.init_sharded(
            init, mesh, rules, jax.random.fold_in(rng, 1)
        )
        params["value"]["adapters"] = adapters
        shardings["value"]["adapters"] = adapters_sh
    return params, shardings

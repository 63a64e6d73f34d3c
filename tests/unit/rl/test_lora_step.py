"""LoRA in RL (rl/policy_value.py, roles.build_roles(lora=...), the learner): the anchor is
the frozen SFT tree itself, the optimizer state covers adapters and the value head only,
one A2C step equals a reference written out here (jax.grad of the A2C loss through the
merged kernels W + (alpha/r)·a·b, then SGD or Adam by hand in NumPy), and the policy the
checkpoints export is base + (alpha/r)·a·b with the adapted model's logits."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlaif_jax.models import lora
from rlaif_jax.models import model as model_lib
from rlaif_jax.models.config import get_config
from rlaif_jax.rl import learner as learner_lib
from rlaif_jax.rl import roles as roles_lib
from rlaif_jax.rl import rollout
from rlaif_jax.rl.runner import RLRunner, RLSettings
from rlaif_jax.sharding import model_params, partition
from rlaif_jax.sharding.mesh import make_mesh
from rlaif_jax.sharding.rules import get_rules
from tests.integration import rl_fakes

CONFIG = get_config("tiny", vocab_size=48, d_model=32, head_dim=8, mlp_dim=48, num_layers=1)
LORA = lora.LoRAConfig(rank=4, alpha=8.0, targets=("q", "v", "o", "up", "down"))
N, LP, T = 8, 5, 4
SETTINGS = RLSettings(
    batch_size=N,
    learning_rate=0.3,
    optimizer="sgd",
    grad_clip=None,
    max_context=LP,
    max_response=T,
    kl_coef=0.1,
    value_coef=0.5,
)


def _runner(settings, shared=False, seed=0, full=False):
    """An RLRunner over a LoRA policy / value on a born-sharded SFT tree (fsdp on a
    (2, 4, 1) mesh, so adapters are sharded too); adapters moved off b = 0 so both
    factors get gradients (`full`: no LoRA, a full policy copy; with `shared` that is
    the value head on the full policy's trunk). Returns (runner, the SFT tree as given)."""
    mesh, rules = make_mesh(2, 4, 1), get_rules("fsdp")
    sft, _ = model_params.init_params(CONFIG, jax.random.PRNGKey(seed), mesh, rules)
    roles = roles_lib.build_roles(
        CONFIG,
        sft,
        mesh,
        rules,
        seed=seed,
        lora=None if full else LORA,
        value_on_policy_trunk=shared,
    )
    assert roles.anchor is sft  # the frozen base is the anchor: no copy
    roles.params = _perturbed(roles.params)
    runner = RLRunner(settings, roles, None, rl_fakes.CharVocab(), mesh, rules, sample_fn=None)
    return runner, sft


@jax.jit
def _perturbed(params):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(11), len(leaves))
    return jax.tree.unflatten(
        tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )


def _batch(mesh):
    rng = np.random.default_rng(0)
    resp_len = rng.integers(1, T + 1, N)
    local = {
        "prompt_tokens": rng.integers(3, CONFIG.vocab_size, (N, LP)).astype(np.int32),
        "prompt_lengths": rng.integers(2, LP + 1, N).astype(np.int32),
        "response_tokens": rng.integers(3, CONFIG.vocab_size, (N, T)).astype(np.int32),
        "response_mask": (np.arange(T)[None] < resp_len[:, None]).astype(np.int32),
        "sampler_logprobs": np.zeros((N, T), np.float32),
        "scores": rng.normal(size=N).astype(np.float32),
    }
    return partition.global_batch(local, mesh)


def _step(runner):
    """score -> targets -> update on a fixed batch, as RLRunner.step runs them."""
    batch = _batch(runner.mesh)
    before = jax.device_get(runner.state.params)  # the update donates the state
    lp, anchor_lp, values = runner.learner.score_fn(runner.state.params, runner.roles.anchor, batch)
    batch.update(logprobs=lp, anchor_logprobs=anchor_lp, values=values)
    state, targets, _ = runner.learner.targets_fn(runner.state, batch)
    batch.update(targets)
    update = {k: batch[k] for k in learner_lib.UPDATE_FIELDS}
    state, metrics = runner.learner.update_fn(state, update, runner.roles.anchor)
    return before, jax.device_get(batch), state, metrics


@functools.partial(jax.jit, static_argnums=(3, 4))
def _reference(params, base, batch, shared, full=False):
    """(grads of the A2C loss, logprobs, values) written out without `policy_value`: the
    policy is the plain LM on merged kernels, the value the scalar-head model on the
    trunk with the value adapters merged (or the policy's, `shared`)."""
    packed = rollout.pack_sequences(
        batch["prompt_tokens"],
        batch["prompt_lengths"],
        batch["response_tokens"],
        batch["response_mask"],
        0,
    )
    mask = batch["response_mask"].astype(jnp.float32)
    kw = dict(attention_mask=packed.attention_mask, logits_positions=packed.state_positions)

    def outputs(p):
        policy = p["policy"] if full else lora.merge(base, p["policy"], LORA)
        logits, _ = model_lib.apply(CONFIG, policy, packed.tokens, **kw)
        logp = jnp.take_along_axis(
            jax.nn.log_softmax(logits), batch["response_tokens"][..., None], -1
        )[..., 0]
        trunk = policy if shared else lora.merge(base, p["value"]["adapters"], LORA)
        scalar = model_lib.lm_to_scalar_params(trunk, {"score_head": p["value"]["score_head"]})
        values, _ = model_lib.apply(CONFIG, scalar, packed.tokens, head="scalar", **kw)
        return logp, values

    def loss(p):
        logp, values = outputs(p)
        pg = -jnp.sum(logp * batch["advantages"] * mask) / jnp.sum(mask)
        vl = jnp.sum((batch["returns"] - values) ** 2 * mask) / jnp.sum(mask)
        return pg + SETTINGS.value_coef * vl

    return jax.grad(loss)(params), *outputs(params)


def _close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


@pytest.mark.parametrize(
    "shared,full",
    [(False, False), (True, False), (True, True)],
    ids=["own_trunk", "policy_trunk", "full_policy_trunk"],
)
def test_one_sgd_step_equals_the_reference(shared, full):
    runner, sft = _runner(SETTINGS, shared, full=full)
    assert set(runner.state.params["value"]) == (
        {"score_head"} if shared else {"adapters", "score_head"}
    )
    before, batch, state, _ = _step(runner)
    grads, logp, values = _reference(before, sft, batch, shared, full)
    mask = batch["response_mask"]
    # Scoring equals the merged-kernel forward; the anchor is the SFT model itself.
    np.testing.assert_allclose(batch["logprobs"], logp * mask, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch["values"], values * mask, rtol=1e-5, atol=1e-5)
    at_sft = {**before, "policy": jax.tree.map(np.zeros_like, before["policy"])}
    if full:
        at_sft["policy"] = jax.device_get(sft)
    sft_logp, _ = _reference(at_sft, sft, batch, shared, full)[1:]
    np.testing.assert_allclose(batch["anchor_logprobs"], sft_logp * mask, rtol=1e-5, atol=1e-5)
    # Returns: KL-control reward per token plus the score at the last token, summed ahead.
    kl = batch["logprobs"] - batch["anchor_logprobs"]
    r = -SETTINGS.kl_coef * kl * mask
    last = mask.sum(-1).astype(int) - 1
    r[np.arange(N), last] += batch["scores"]
    np.testing.assert_allclose(
        batch["returns"], np.cumsum(r[:, ::-1], -1)[:, ::-1] * mask, atol=1e-5
    )
    # SGD: new = old - lr * grad, for every adapter and the head.
    want = jax.tree.map(lambda p, g: p - SETTINGS.learning_rate * np.asarray(g), before, grads)
    _close(jax.device_get(state.params), want, rtol=1e-4, atol=1e-6)
    moved = [np.abs(np.asarray(g)).max() for g in jax.tree.leaves(grads)]
    assert min(moved) > 0  # every trainable leaf (both factors, the head) is updated
    # The frozen tree did not move and is still alive (not donated).
    np.testing.assert_array_equal(
        np.asarray(runner.roles.anchor["embedder"]["embedding"]),
        np.asarray(sft["embedder"]["embedding"]),
    )
    if not shared:
        runner.state = state
        _check_export(runner, sft)


def test_adam_step_with_per_part_clipping_equals_numpy_and_state_is_adapters_only():
    settings = dataclasses.replace(SETTINGS, optimizer="adam", learning_rate=1e-2, grad_clip=0.05)
    runner, sft = _runner(settings)
    state0 = runner.state
    # Optimizer state: two moments per adapter / head leaf, nothing of the base model.
    trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state0.params))
    opt_elems = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state0.opt_state))
    counts = len([x for x in jax.tree.leaves(state0.opt_state) if x.ndim == 0])
    assert opt_elems == 2 * trainable + counts
    assert trainable == lora.num_params(state0.params["policy"]) * 2 + CONFIG.d_model
    full = 2 * sum(int(np.prod(x.shape)) for x in jax.tree.leaves(sft)) + CONFIG.d_model
    assert trainable < 0.15 * full  # vs policy + value copies without LoRA
    shapes = {tuple(x.shape) for x in jax.tree.leaves(state0.opt_state)}
    assert (CONFIG.vocab_size, CONFIG.d_model) not in shapes
    before, batch, state, metrics = _step(runner)
    grads = jax.device_get(_reference(before, sft, batch, False)[0])
    want = {}
    for part in ("policy", "value"):
        g = grads[part]
        norm = np.sqrt(
            sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in jax.tree.leaves(g))
        )
        np.testing.assert_allclose(metrics[f"grad_norm_{part}"], norm, rtol=1e-4)
        scale = min(1.0, settings.grad_clip / norm)

        def adam(p, g, scale=scale, b1=0.9, b2=0.999, eps=1e-8):
            g = np.asarray(g, np.float64) * scale
            m, v = (1 - b1) * g, (1 - b2) * g * g
            return p - settings.learning_rate * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)

        want[part] = jax.tree.map(adam, before[part], g)
    _close(jax.device_get(state.params), want, rtol=1e-4, atol=1e-6)


def _check_export(runner, sft):
    """The policy the checkpoints hold (`RLRunner.export_policy`) is base + (alpha/r)·a·b
    per adapted kernel, the base elsewhere, laid out as the SFT tree, with the adapted
    model's logits."""
    adapters = jax.device_get(runner.state.params["policy"])
    merged = runner.export_policy(runner.state)
    assert jax.tree.structure(merged) == jax.tree.structure(sft)
    assert jax.tree.map(lambda x: x.sharding, merged) == jax.tree.map(lambda x: x.sharding, sft)
    base = jax.device_get(sft)
    for layer, mods in adapters.items():
        for parent, projs in mods.items():
            for name, ab in projs.items():
                w = base[layer][parent][name]["kernel"]
                a, b = ab["a"].astype(np.float64), ab["b"].astype(np.float64)
                want = w + LORA.scale * (
                    a.reshape(-1, LORA.rank) @ b.reshape(LORA.rank, -1)
                ).reshape(w.shape)
                got = np.asarray(merged[layer][parent][name]["kernel"])
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(merged["embedder"]["embedding"]), base["embedder"]["embedding"]
    )
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, 48, (2, 7)), jnp.int32)
    ours = jax.jit(
        lambda p, ad, t: runner.roles.policy_model.apply(lora.variables(p, ad, LORA), t)[0]
    )(sft, runner.state.params["policy"], tokens)
    theirs = jax.jit(lambda p, t: model_lib.apply(CONFIG, p, t)[0])(merged, tokens)
    np.testing.assert_allclose(np.asarray(theirs), np.asarray(ours), rtol=1e-5, atol=1e-5)


def test_lora_gin_builds_the_stage_lora_config():
    """gin/method/lora.gin gives `rl.run_stage` its `lora` (in any scope that binds it);
    without LoRAConfig bindings the stage gets None (full fine-tuning)."""
    import gin

    from rlaif_jax import configurables, gin_utils
    from rlaif_jax.rl import stage

    assert configurables.stage_objects(stage.run_stage)["lora"] is None
    gin.add_config_file_search_path(gin_utils.default_search_paths()[0])
    gin.parse_config_files_and_bindings(
        ["method/lora.gin"], ["rl_x/LoRAConfig.rank = 16"], finalize_config=False
    )
    assert configurables.stage_objects(stage.run_stage)["lora"] == lora.LoRAConfig(8, 16.0)
    with gin.config_scope("rl_x"):
        built = configurables.stage_objects(stage.run_stage)["lora"]
    assert type(built) is lora.LoRAConfig and built == lora.LoRAConfig(16, 16.0)
    assert built.targets == lora.ALL_TARGETS

"""Gin at the boundary: Core and Data hold no gin; the Face (`rlaif_jax.configurables`,
the CLI, the pipeline) builds each stage's mesh, rules, data, optimizer and settings in
the step's gin scope and passes them as objects."""

import os
import re

import jax
import jax.numpy as jnp
import pytest

from rlaif_jax import cli, configurables, gin_utils, pipeline
from rlaif_jax.data import tasks
from rlaif_jax.sharding import mesh as mesh_lib
from rlaif_jax.sharding import rules as rules_lib
from rlaif_jax.train import supervised
from tests.unit import objects_test_stage

PACKAGE = os.path.dirname(configurables.__file__)
CORE_AND_DATA = ("models", "decoding", "sharding", "train", "data")
FIX = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
TLDR = os.path.join(FIX, "tldr_train.jsonl")
COMP = os.path.join(FIX, "comparisons.jsonl")
SUMMARIZE = [
    f"TLDR_TRAIN = '{TLDR}'",
    f"TLDR_VALIDATION = '{TLDR}'",
    f"TLDR_TEST = '{TLDR}'",
    f"COMPARISONS = ['{COMP}']",
]


@pytest.fixture(autouse=True)
def _register_test_stage():
    cli.register_stage("objects_test", "tests.unit.objects_test_stage", "test stage")
    objects_test_stage.CALLS.clear()
    yield
    cli.STAGES.pop("objects_test", None)


def _sgd_step(optimizer) -> float:
    """The update of a parameter 0.0 with gradient 1.0: -learning rate for plain SGD."""
    params = {"w": jnp.zeros(())}
    updates, _ = optimizer.update({"w": jnp.ones(())}, optimizer.init(params), params)
    return float(updates["w"])


def test_core_and_data_hold_no_gin():
    offenders = []
    for package in CORE_AND_DATA:
        for root, _, files in os.walk(os.path.join(PACKAGE, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(root, name)
                with open(path) as f:
                    for i, line in enumerate(f, 1):
                        if re.search(r"\bgin\b", line):
                            offenders.append(
                                f"{os.path.relpath(path, PACKAGE)}:{i}: {line.strip()}"
                            )
    assert not offenders, "gin in Core/Data:\n" + "\n".join(offenders)


def test_core_functions_work_without_gin():
    mesh = mesh_lib.make_mesh(2, 2, 2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert mesh_lib.local_mesh(mesh) is mesh  # one process: the whole mesh
    assert configurables.get_rules is not rules_lib.get_rules  # gin's wrapper, not Core's
    assert rules_lib.get_rules("dp") == rules_lib.DP


def test_cli_stage_gets_the_gin_bound_objects(tmp_path):
    rc = cli.main(
        [
            "objects_test",
            "--gin_file=tasks/summarize.gin",
            *(f"--gin_bindings={b}" for b in SUMMARIZE),
            "--gin.make_mesh.data=2",
            "--gin.make_mesh.fsdp=1",
            "--gin.make_mesh.tensor=4",
            "--gin.get_rules.name='fsdp_tp'",
            "--gin.make_optimizer.name='sgd'",
            "--gin.make_optimizer.clip_norm=None",
            "--gin.make_schedule.learning_rate=0.25",
            "--gin.TrainSettings.batch_size=7",
            "--gin.PolicyPairs.pairs_dir='policy_pairs'",
            "--workdir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    got = objects_test_stage.CALLS[-1]
    assert got["workdir"] == str(tmp_path)
    assert dict(got["mesh"].shape) == {"data": 2, "fsdp": 1, "tensor": 4}
    assert got["rules"] == rules_lib.get_rules("fsdp_tp")
    assert isinstance(got["data"], tasks.TaskSources) and got["data"].task == "summarize"
    assert got["policy_pairs"] == tasks.PolicyPairs(pairs_dir="policy_pairs")
    # make_schedule's binding reaches the optimizer gin's make_optimizer builds.
    assert _sgd_step(got["optimizer"]) == pytest.approx(-0.25)
    assert got["train_settings"] == supervised.TrainSettings(batch_size=7)
    # Plain frozen dataclasses: a copy made in Core reads no gin.
    assert type(got["train_settings"]) is supervised.TrainSettings
    assert type(got["policy_pairs"]) is tasks.PolicyPairs
    # Every binding was used by the objects the stage received.
    assert not [b for b in gin_utils.unused_bindings() if "objects_test" not in b]


def test_scoped_binding_reaches_only_its_step(tmp_path):
    gin_utils.parse_gin(
        [],
        [
            "sft/TrainSettings.batch_size = 5",
            "TrainSettings.num_epochs = 3",
            "make_optimizer.name = 'sgd'",
            "make_optimizer.clip_norm = None",
            "sft/make_schedule.learning_rate = 0.5",
            "rm_ai/make_mesh.data = 2",
            "rm_ai/make_mesh.fsdp = 4",
            "pipeline.steps = [('objects_test', 'sft', 'a'), ('objects_test', 'rm_ai', 'b')]",
        ],
    )
    pipeline.run_stage(workdir=str(tmp_path))
    sft, rm = objects_test_stage.CALLS
    assert sft["train_settings"] == supervised.TrainSettings(batch_size=5, num_epochs=3)
    assert rm["train_settings"] == supervised.TrainSettings(num_epochs=3)
    assert _sgd_step(sft["optimizer"]) == pytest.approx(-0.5)
    assert _sgd_step(rm["optimizer"]) == pytest.approx(-1e-5)  # make_schedule's default
    assert dict(rm["mesh"].shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert dict(sft["mesh"].shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}
    assert sft["data"] is None and rm["data"] is None  # no task file: none to give


def test_a_bound_schedule_or_entry_argument_is_left_to_gin():
    gin_utils.parse_gin(
        [],
        [
            "make_optimizer.name = 'sgd'",
            "make_optimizer.clip_norm = None",
            "make_optimizer.schedule = 0.125",
            "make_schedule.learning_rate = 9.0",  # not used: the schedule is bound
            "objects_test_stage.rules = 'mine'",
        ],
    )
    objects = configurables.stage_objects(objects_test_stage.run_stage)
    assert _sgd_step(objects["optimizer"]) == pytest.approx(-0.125)
    assert "rules" not in objects and "mesh" in objects
    objects_test_stage.run_stage(**objects)
    assert objects_test_stage.CALLS[-1]["rules"] == "mine"
    unused = gin_utils.unused_bindings()
    assert len(unused) == 1 and unused[0].endswith("make_schedule.learning_rate"), unused


def test_entry_takes_only_the_objects_it_declares():
    def entry(workdir, mesh=None, settings=None):
        del workdir, mesh, settings

    assert set(configurables.stage_objects(entry)) == {"mesh"}

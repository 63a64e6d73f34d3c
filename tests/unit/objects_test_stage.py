"""A stage used only by tests/unit/test_configurables.py: records the objects the Face
(`rlaif_jax.configurables.stage_objects`) passed it."""

import gin

CALLS = []


@gin.configurable("objects_test_stage")
def run_stage(
    workdir: str = "/tmp/unused",
    mesh=None,
    rules=None,
    data=None,
    policy_pairs=None,
    optimizer=None,
    train_settings=None,
    note: str = "",
):
    CALLS.append(
        {
            "workdir": workdir,
            "mesh": mesh,
            "rules": rules,
            "data": data,
            "policy_pairs": policy_pairs,
            "optimizer": optimizer,
            "train_settings": train_settings,
            "note": note,
        }
    )

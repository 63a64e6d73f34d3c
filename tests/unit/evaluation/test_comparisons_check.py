"""evaluate's comparisons are checked before any decoding, through the CLI on the demo's gin
file: a compared name that `evaluate.policies` lacks, or a left-out win rate that
metrics.json must hold (DESIGN §5), fails naming the binding; comparisons that pass the
check go on to the stage's next step (here: the missing SFT artifact)."""

import re

import pytest

from rlaif_jax import cli

DEMO = "experiments/demo.gin"
ARMS = "('rlaif', 'sft'), ('rlhf', 'sft'), ('rlaif', 'rlhf')"


def _evaluate(workdir, *bindings):
    args = ["evaluate", "--gin_file", DEMO, "--workdir", str(workdir)]
    for binding in bindings:
        args += ["--gin_bindings", binding]
    return cli.main(args)


@pytest.mark.parametrize(
    "bindings, message",
    [
        (
            [f"evaluate.comparisons = [{ARMS}, ('rlaif_s2', 'sft')]"],
            "evaluate.comparisons compares ['rlaif_s2'], which evaluate.policies "
            "['sft', 'rlaif', 'rlhf'] lacks",
        ),
        (
            ["evaluate.comparisons = [('rlaif', 'sft'), ('rlhf', 'sft')]"],
            "evaluate.comparisons lacks [('rlaif', 'rlhf')]",
        ),
        (
            ["evaluate.comparisons = [('rlhf', 'sft'), ('rlaif', 'rlhf')]"],
            "evaluate.comparisons lacks [('rlaif', 'sft')]",
        ),
        (
            ["evaluate.ai_judge_comparisons = [('rlhf', 'sft')]"],
            "evaluate.ai_judge_comparisons lacks [('rlaif', 'sft')]",
        ),
    ],
)
def test_bad_comparisons_fail_before_decoding(tmp_path, bindings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _evaluate(tmp_path, *bindings)
    assert not (tmp_path / "report").exists()


def test_extra_arms_pass_the_check(tmp_path, capsys):
    """A seed sweep's extra arm, named in both bindings, passes: the stage then stops at
    the first artifact it reads, which this empty work directory lacks."""
    rc = _evaluate(
        tmp_path,
        "evaluate.policies = [('sft', 'sft'), ('rlaif', 'rl_rlaif'), ('rlhf', 'rl_rlhf'), "
        "('rlaif_s2', 'rl_rlaif_s2')]",
        f"evaluate.comparisons = [{ARMS}, ('rlaif_s2', 'sft')]",
    )
    err = capsys.readouterr().err
    assert rc == 2 and "comparisons" not in err
    assert "no such model directory" in err

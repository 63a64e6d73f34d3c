"""The paper's tables as a user runs them (issue 20.4): each table experiment of
gin/experiments/tables/ through the CLI at test size, on the toy world and on tiny real
HF-layout checkpoints with real-format files. Each run: every row completes in its own
directory, report/report.md holds the table's section with the paper's column, and every
gin binding of the composition configured a stage (`gin_utils.unused_bindings`)."""

from __future__ import annotations

import json
import pathlib

import pytest

from rlaif_jax import artifacts, cli, gin_utils
from tests.fixtures import real_world
from tests.integration.local_processes import REPO
from tests.integration.test_real_path import TASK_MACROS, compile_cache_env, run_cli

REPO_GIN = pathlib.Path(REPO) / "gin"

# Labeler calls of 16 prompts: the tiny vocabulary makes prompts of ~1k tokens, whose
# attention over 64-prompt calls (the toy world's) took >20 GB in CoT sampling.
SMALL_CALLS = "--gin.labeler_from_checkpoint.batch_size=16"
TINY = ["--gin_file=test/toy_tiny_labeling.gin", "--gin.LabelerSettings.cot_max_tokens=4"]
TINY.append(SMALL_CALLS)
# The Detailed preamble is ~700 pieces of the tiny vocabulary: a longer labeler window.
LONG = ["--gin.LabelerSettings.max_len=1024", "--gin.labeler_from_checkpoint.max_len=1024"]


def _table(workdir, name):
    table = json.loads((workdir / "report" / "tables" / f"{name}.json").read_text())
    report = (workdir / "report" / "report.md").read_text()
    assert f"<!-- section:table.{name} -->" in report, name
    assert (workdir / "report" / "tables" / f"{name}.md").read_text().strip() in report
    assert artifacts.is_complete(str(workdir / "tables" / name)), name
    return table


def _rows(table):
    return {r["row"]: r for r in table["rows"]}


def _pipeline(experiment, workdir, *extra, tiny=TINY):
    args = ["pipeline", f"--gin_file=experiments/tables/{experiment}.gin", *tiny, *extra]
    assert cli.main([*args, f"--workdir={workdir}"]) == 0
    assert gin_utils.unused_bindings() == []


@pytest.mark.slow
def test_toy_alignment_tables_table2_self_consistency_and_labeler_size(tmp_path):
    _pipeline("toy_alignment", tmp_path, *LONG)
    table2 = _rows(_table(tmp_path, "table2"))
    assert list(table2) == [
        "base_0shot", "base_1shot", "base_cot_0shot", "detailed_0shot", "detailed_1shot",
        "detailed_cot_0shot",
    ]  # fmt: skip
    assert table2["detailed_cot_0shot"]["paper"] == 0.780
    for row in table2.values():  # every row scores the same alignment subset
        assert 0.0 <= row["value"] <= 1.0 and row["n"] == table2["base_0shot"]["n"] > 0
    # Each row labeled only the alignment subset, with its own prompt.
    base = tmp_path / "tables" / "table2" / "base_0shot"
    assert not list(base.glob("shard-*")) and list((base / "alignment").glob("shard-*"))
    manifest = json.loads(
        (tmp_path / "tables/table2/base_1shot/alignment/manifest.json").read_text()
    )
    assert manifest["variant"].endswith("Base 1-shot") and manifest["exemplar_seed"] == 0
    sc = _rows(_table(tmp_path, "self_consistency"))
    assert len(sc) == 6 and sc["t0.7_16samples"]["paper"] == 0.740
    records = (tmp_path / "tables/self_consistency/t0.7_16samples/alignment").glob("shard-*")
    assert "rationale" in json.loads(next(records).read_text().splitlines()[0])  # CoT ran
    table3 = _table(tmp_path, "table3")
    assert [r["paper"] for r in table3["rows"]] == [0.780, 0.738, None]
    sizes = {
        d: json.loads((tmp_path / d / "model.json").read_text())["config"]["num_layers"]
        for d in ("labeler_2layer", "labeler_4layer")
    }
    assert sizes["labeler_4layer"] > sizes["labeler_2layer"]


@pytest.mark.slow
def test_toy_one_shot_trials_and_rm_accuracy_by_training_pairs(tmp_path):
    rows = (
        "[('ai_16', {'preferences': 'ai', 'max_train_pairs': 16}), ('ai_all', {'preferences': 'ai'}),"
        " ('human_16', {'preferences': 'human', 'max_train_pairs': 16})]"
    )
    _pipeline("toy_more", tmp_path, f"--gin.rm_size/table.rows={rows}")
    trials = _table(tmp_path, "one_shot_trials")
    assert len(trials["rows"]) == 11 and trials["spread"]["max"] >= trials["spread"]["min"]
    for i in range(1, 11):
        manifest = tmp_path / f"tables/one_shot_trials/trial_{i}/alignment/manifest.json"
        assert json.loads(manifest.read_text())["exemplar_seed"] == i
    rm = _rows(_table(tmp_path, "rm_size"))
    assert rm["ai_16"]["train_pairs"] == 16 and rm["human_16"]["train_pairs"] == 16
    assert rm["ai_all"]["train_pairs"] > 16
    assert all(0.0 <= r["value"] <= 1.0 for r in rm.values())


@pytest.mark.slow
def test_toy_sensitivity_then_the_result_tables_of_the_same_workdir(tmp_path):
    _pipeline("toy_sensitivity", tmp_path, tiny=["--gin_file=test/toy_tiny.gin", SMALL_CALLS])
    sens = _rows(_table(tmp_path, "sensitivity"))
    assert sens["detailed_cot_vs_base"]["metric"] == "win_rate_rlaif_detailed_cot_vs_rlaif"
    assert sens["alignment_detailed_cot_0shot"]["paper"] == 0.780
    for row in sens.values():
        assert 0.0 <= row["value"] <= 1.0, row
    _pipeline("results", tmp_path, tiny=[])
    table1 = _rows(_table(tmp_path, "table1"))
    assert table1["rlaif_vs_sft"]["metric"] == "win_rate_rlaif_vs_sft"  # the oracle's
    assert table1["rlaif_vs_sft"]["paper"] == 0.71
    assert "value" not in table1["d_rlaif_vs_sft"]  # no d-RLAIF arm in this experiment: "—"
    assert _rows(_table(tmp_path, "table5"))["rm_ai"]["value"] is not None
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.startswith("# rlaif_jax report")  # the evaluation's main part stays first
    assert report.index("table.sensitivity") < report.index("table.table1")


def _rows_of(gin_file, scope, n=None, skip=0, names=None):
    """Rows skip..skip+n (or the rows named `names`) of `scope/table.rows` in a gin/tables
    file, as gin text."""
    text = (REPO_GIN / "tables" / gin_file).read_text().split(f"{scope}/table.rows = [")[1]
    rows = [r.strip().rstrip(",") for r in text.split("\n]")[0].splitlines() if r.strip()]
    if names is not None:
        rows = [r for r in rows if r.split("'")[1] in names]
        assert len(rows) == len(names), names
        return "[" + ", ".join(rows) + "]"
    return "[" + ", ".join(rows[skip : skip + n]) + "]"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return real_world.write_real_world(str(tmp_path_factory.mktemp("real_world")))


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """The labeler's programs compile once for both real-checkpoint runs (per worker)."""
    return compile_cache_env(tmp_path_factory.mktemp("jax_compile_cache"))


TABLE2_DIALOGUE = ("base_0shot", "base_cot_0shot", "detailed_0shot", "detailed_cot_1shot")


@pytest.mark.slow
def test_alignment_tables_on_real_checkpoints_for_dialogue(world, compile_cache, tmp_path):
    args = [
        "pipeline",
        "--gin_file=tasks/helpful.gin",
        "--gin_file=experiments/tables/paper_alignment.gin",
        "--gin_file=tables/dialogue.gin",
        "--gin_file=test/tiny_real_tables.gin",
        f"--gin.LABELER_HF_DIR='{world['LABELER_HF_DIR']}'",
        *[f"--gin.{m}='{world[m]}'" for m in TASK_MACROS["helpful"]],
        # Four of the ten dialogue Table 2 rows (Base and our Detailed preamble, with and
        # without CoT, 0- and 1-shot with the shipped dialogue exemplars), two trials and
        # two self-consistency rows: each row is a compile of its own on the tiny labeler
        # (every summarization row runs on the toy world above).
        "--gin.table2/table.rows=" + _rows_of("dialogue.gin", "table2", names=TABLE2_DIALOGUE),
        "--gin.one_shot_trials/table.rows=" + _rows_of("one_shot_trials.gin", "one_shot_trials", 2),
        "--gin.self_consistency/table.rows=" + _rows_of("dialogue.gin", "self_consistency", 2, 1),
        f"--workdir={tmp_path}",
    ]
    out = run_cli(args, tmp_path / "out.json", env_extra=compile_cache)
    assert out["rc"] == 0 and out["toy_modules"] == []
    assert out["unused_bindings"] == [], out["unused_bindings"]
    table2 = _table(tmp_path, "table2")
    assert table2["task"] == "helpful" and list(_rows(table2)) == list(TABLE2_DIALOGUE)
    assert _rows(table2)["base_cot_0shot"]["paper"] == 0.691
    assert _rows(table2)["detailed_cot_1shot"]["paper"] == 0.674
    manifest = tmp_path / "tables/table2/detailed_cot_1shot/alignment/manifest.json"
    assert json.loads(manifest.read_text())["variant"] == "helpful: Detailed + CoT 1-shot"
    assert all(0.0 <= r["value"] <= 1.0 for r in table2["rows"])
    trials = _rows(_table(tmp_path, "one_shot_trials"))
    assert list(trials) == ["base_0shot", "trial_1"] and trials["base_0shot"]["paper"] == 0.678
    sc = _rows(_table(tmp_path, "self_consistency"))
    assert list(sc) == ["t0.3_4samples", "t0.3_16samples"]


@pytest.mark.slow
def test_labeler_size_table_on_real_checkpoints(world, compile_cache, tmp_path):
    args = [
        "pipeline",
        "--gin_file=tasks/summarize.gin",
        "--gin_file=experiments/tables/paper_labeler_size.gin",
        "--gin_file=test/tiny_real_tables.gin",
        f"--gin.LABELER_HF_DIR='{world['LABELER_HF_DIR']}'",
        f"--gin.SMALL_LABELER_HF_DIR='{world['POLICY_HF_DIR']}'",
        f"--gin.XSMALL_LABELER_HF_DIR='{world['LABELER_HF_DIR']}'",
        *[f"--gin.{m}='{world[m]}'" for m in TASK_MACROS["summarize"]],
        f"--workdir={tmp_path}",
    ]
    out = run_cli(args, tmp_path / "out.json", env_extra=compile_cache)
    assert out["rc"] == 0 and out["unused_bindings"] == [], out
    rows = _rows(_table(tmp_path, "table3"))
    assert [r["paper"] for r in rows.values()] == [0.780, 0.738, 0.627]
    # The same checkpoint twice gives the same alignment; a different labeler is its own run.
    assert rows["large"]["value"] == rows["xsmall"]["value"]


@pytest.mark.slow
def test_sensitivity_then_rm_size_on_real_checkpoints(world, compile_cache, tmp_path):
    """App. N and v1's RM-size study on tiny real checkpoints, the user's two commands on
    one work directory: the second reuses the first's SFT and labels."""
    macros = [
        f"--gin.POLICY_HF_DIR='{world['POLICY_HF_DIR']}'",
        f"--gin.LABELER_HF_DIR='{world['LABELER_HF_DIR']}'",
        *[f"--gin.{m}='{world[m]}'" for m in TASK_MACROS["summarize"]],
        f"--workdir={tmp_path}",
    ]
    task = "--gin_file=tasks/summarize.gin"
    args = ["pipeline", task, "--gin_file=experiments/tables/paper_sensitivity.gin"]
    args.append("--gin_file=test/tiny_real_core.gin")
    out = run_cli([*args, *macros], tmp_path / "out.json", env_extra=compile_cache)
    assert out["rc"] == 0 and out["toy_modules"] == [], out
    assert out["unused_bindings"] == [], out["unused_bindings"]
    sens = _rows(_table(tmp_path, "sensitivity"))
    assert sens["detailed_cot_vs_base"]["metric"] == "win_rate_rlaif_detailed_cot_vs_rlaif_ai_judge"
    assert sens["base_vs_sft"]["paper"] == 0.63 and sens["detailed_cot_vs_base"]["paper"] == 0.59
    for row in sens.values():
        assert 0.0 <= row["value"] <= 1.0, row
    variants = {
        d: json.loads((tmp_path / d / "manifest.json").read_text())["variant"]
        for d in ("labels", "labels_detailed_cot")
    }
    assert variants == {
        "labels": "summarize: Base 0-shot",
        "labels_detailed_cot": "summarize: Detailed + CoT 0-shot",
    }
    labels_done = (tmp_path / "labels" / "COMPLETE").read_text()

    rows = "[('ai_1of2', {'preferences': 'ai', 'train_fraction': 0.5}), ('human_all', {'preferences': 'human'})]"
    args = ["pipeline", task, "--gin_file=experiments/tables/paper_rm_size.gin"]
    args += ["--gin_file=test/tiny_real_rm.gin", f"--gin.rm_size/table.rows={rows}"]
    out = run_cli([*args, *macros], tmp_path / "out_rm.json", env_extra=compile_cache)
    assert out["rc"] == 0, out
    assert (tmp_path / "labels" / "COMPLETE").read_text() == labels_done  # reused, not rerun
    # Only the bindings of the two finished stages it skipped (and the macros only they
    # read) went unused.
    skipped = {"sft", "label", "LabelerSettings", "labeler_from_checkpoint"}
    macros_of_skipped = {"POLICY_HF_DIR", "LABELER_HF_DIR"}
    unused = out["unused_bindings"]  # "[scope/]module.configurable.param" or a macro
    owner = [b.split("/")[0] if "/" in b else b.split(".")[-2:][0] for b in unused]
    assert unused and all(b in macros_of_skipped or o in skipped for b, o in zip(unused, owner))
    rm = _rows(_table(tmp_path, "rm_size"))
    ai_all = json.loads((tmp_path / "rm_ai" / "COMPLETE").read_text())["metrics"]
    assert rm["ai_1of2"]["train_pairs"] == round(ai_all["num_train_pairs"] / 2)
    assert all(0.0 <= r["value"] <= 1.0 for r in rm.values())

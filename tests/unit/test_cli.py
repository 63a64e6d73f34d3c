"""The t5x-style gin CLI: search paths, --gin.X shorthand, REQUIRED macros, errors."""

import json
import subprocess
import sys

import pytest

from rlaif_jax import cli, gin_utils
from tests.unit import cli_test_stage


@pytest.fixture(autouse=True)
def _register_test_stage():
    cli.register_stage("cli_test", "tests.unit.cli_test_stage", "test stage")
    cli_test_stage.CALLS.clear()
    yield
    cli.STAGES.pop("cli_test", None)


def test_shorthand_rewrite():
    rest, b = gin_utils.rewrite_gin_shorthand(
        ["--workdir", "w", "--gin.FOO=3", "--gin.bar.baz='x y'", "--gin.Q", "[1, 2]"]
    )
    assert rest == ["--workdir", "w"]
    assert b == ["FOO = 3", "bar.baz = 'x y'", "Q = [1, 2]"]


def test_shorthand_without_value_is_an_error():
    with pytest.raises(gin_utils.GinUsageError, match="has no value"):
        gin_utils.rewrite_gin_shorthand(["--gin.FOO"])


def test_include_from_any_directory_and_operative_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(
        [
            "cli_test",
            "--gin_file",
            "test/cli_include.gin",
            "--gin.CLI_TEST_VALUE=7",
            "--workdir",
            str(tmp_path / "w"),
        ]
    )
    assert rc == 0
    assert cli_test_stage.CALLS[-1] == {"workdir": str(tmp_path / "w"), "value": 7, "scale": 2}
    config = (tmp_path / "w" / "config.gin").read_text()
    assert "CLI_TEST_VALUE = 7" in config and "cli_test_stage.value = %CLI_TEST_VALUE" in config


def test_gin_bindings_flag_and_order(tmp_path):
    rc = cli.main(
        [
            "cli_test",
            "--gin_file=test/cli_include.gin",
            "--gin_bindings",
            "CLI_TEST_VALUE = 'a'",
            "--gin_bindings=cli_test_stage.scale = 5",
            "--workdir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    assert cli_test_stage.CALLS[-1]["value"] == "a" and cli_test_stage.CALLS[-1]["scale"] == 5


def test_missing_required_macro_names_macro_and_file(tmp_path, capsys):
    rc = cli.main(["cli_test", "--gin_file", "test/cli_include.gin", "--workdir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "CLI_TEST_VALUE" in err and "cli_base.gin" in err
    assert not cli_test_stage.CALLS


def test_unknown_gin_file_names_search_path(tmp_path, capsys):
    rc = cli.main(["cli_test", "--gin_file", "nope/missing.gin", "--workdir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope/missing.gin" in err and "search path" in err
    assert gin_utils.default_search_paths()[0] in err


def test_bad_binding_is_quoted(tmp_path, capsys):
    rc = cli.main(
        ["cli_test", "--gin_file", "test/cli_include.gin", "--gin_bindings", "CLI_TEST_VALUE = = 3"]
    )
    assert rc == 2
    assert "'CLI_TEST_VALUE = = 3'" in capsys.readouterr().err


def test_unknown_configurable_in_binding(tmp_path, capsys):
    rc = cli.main(
        [
            "cli_test",
            "--gin_file",
            "test/cli_include.gin",
            "--gin.CLI_TEST_VALUE=1",
            "--gin.no_such_fn.x=1",
        ]
    )
    assert rc == 2
    assert "no_such_fn.x = 1" in capsys.readouterr().err


def test_unknown_stage(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown stage 'frobnicate'" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "rlaif_jax", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    for stage in ("sft", "label", "reward", "rl", "evaluate", "pipeline", "bench"):
        assert stage in out.stdout


def test_out_json_written(tmp_path):
    cli.main(
        [
            "cli_test",
            "--gin_file",
            "test/cli_include.gin",
            "--gin.CLI_TEST_VALUE=3",
            "--workdir",
            str(tmp_path),
        ]
    )
    assert json.loads((tmp_path / "out.json").read_text()) == {"value": 3, "scale": 2}


def _gin_clear():
    """Between two CLI calls in one test (gin is global state)."""
    import gin

    gin.clear_config()


def test_gin_search_paths_take_a_comma_separated_list(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    (first / "top.gin").write_text("include 'base_x.gin'\ncli_test_stage.scale = 3\n")
    (second / "base_x.gin").write_text("cli_test_stage.value = 'from second'\n")
    args = ["cli_test", "--gin_file", "top.gin", "--workdir", str(tmp_path / "w")]
    assert cli.main([*args, f"--gin_search_paths={first},{second}"]) == 0
    assert cli_test_stage.CALLS[-1]["value"] == "from second"
    assert cli_test_stage.CALLS[-1]["scale"] == 3
    # One path per flag (repeated) still works, as before.
    _gin_clear()
    assert cli.main([*args, f"--gin_search_paths={first}", f"--gin_search_paths={second}"]) == 0
    assert gin_utils.split_search_paths([f"{first}, {second}", ""]) == [str(first), str(second)]


def test_config_is_written_at_start_so_a_crashed_run_leaves_one(tmp_path):
    workdir = tmp_path / "w"
    args = ["cli_test", "--gin_file", "test/cli_include.gin", "--gin.CLI_TEST_VALUE=4"]
    with pytest.raises(RuntimeError, match="cli_test_stage failed"):
        cli.main([*args, "--gin.cli_test_stage.fail=True", "--workdir", str(workdir)])
    started = (workdir / "config_cli_test.gin").read_text()
    assert "as parsed at its start" in started and "cli_test_stage.fail = True" in started
    assert (workdir / "config.gin").read_text() == started
    _gin_clear()
    assert cli.main([*args, "--workdir", str(workdir)]) == 0
    assert (workdir / "config.gin").read_text().startswith("# Operative gin config")


def test_workdir_flag_sets_the_workdir_macro(tmp_path, capsys):
    run_file = tmp_path / "run.gin"
    run_file.write_text(
        "# REQUIRED macros: WORKDIR\nWORKDIR = %gin.REQUIRED\ncli_test_stage.value = %WORKDIR\n"
    )
    workdir = str(tmp_path / "w")
    assert cli.main(["cli_test", "--gin_file", str(run_file), "--workdir", workdir]) == 0
    assert cli_test_stage.CALLS[-1] == {"workdir": workdir, "value": workdir, "scale": 1}
    _gin_clear()
    # t5x style, the macro alone, still works; without either the macro is reported.
    assert cli.main(["cli_test", "--gin_file", str(run_file), f"--gin.WORKDIR='{workdir}'"]) == 0
    assert cli_test_stage.CALLS[-1]["workdir"] == workdir
    _gin_clear()
    assert cli.main(["cli_test", "--gin_file", str(run_file)]) == 2
    assert "Gin macro WORKDIR is required" in capsys.readouterr().err
    _gin_clear()
    rc = cli.main(
        ["cli_test", "--gin_file", str(run_file), "--workdir", workdir, "--gin.WORKDIR='/else'"]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert workdir in err and "/else" in err and "different work directories" in err

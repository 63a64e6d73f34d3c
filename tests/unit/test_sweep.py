"""rlaif_jax.sweep: spec parsing, commands, and a two-variant sweep over a fake stage."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rlaif_jax import sweep, sweep_table

REPO = Path(__file__).resolve().parents[2]

# A stand-in for `rlaif-jax STAGE ...`: metrics derived from its gin flags, so the table
# can only be right if each variant's flags reached its own run.
FAKE_STAGE = r"""
import json, os, sys
args = sys.argv[1:]
workdir = [a.split("=", 1)[1] for a in args if a.startswith("--workdir=")][0]
gin = dict(a[len("--gin."):].split("=", 1) for a in args if a.startswith("--gin."))
if gin.get("FAIL") == "True":
    sys.exit(3)
out = os.path.join(workdir, os.environ.get("FAKE_METRICS", "report/metrics.json"))
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump({"stage": args[0], "kl": float(gin.get("KL", "0")), "note": gin.get("NOTE"),
               "has_base_file": "--gin_file=base.gin" in args,
               "per_variant": {"rm": {"acc": 0.5 + float(gin.get("KL", "0"))}},
               "samples": [1, 2]}, f)
"""


@pytest.fixture
def fake_stage(tmp_path):
    path = tmp_path / "fake_stage.py"
    path.write_text(FAKE_STAGE)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def test_two_variants_make_one_table(tmp_path, fake_stage, capsys):
    base = tmp_path / "sweep"
    rc = sweep.main(
        [
            "pipeline",
            f"--base_workdir={base}",
            f"--command={fake_stage}",
            # Shell-split like a command line: a gin string literal keeps its inner quotes.
            "--variant=kl_low:--gin.KL=0.01 --gin.NOTE=\"'a b'\"",
            "--variant=kl_high:--gin.KL=0.1",
            "--jobs=2",
            "--",
            "--gin_file=base.gin",
        ]
    )
    assert rc == 0, capsys.readouterr()
    table = json.loads((base / "sweep.json").read_text())
    assert table["columns"] == [
        "variant",
        "status",
        "returncode",
        "run_seconds",
        "stage",
        "kl",
        "note",
        "has_base_file",
        "per_variant.rm.acc",
    ]
    low, high = table["rows"]
    assert (low["variant"], low["kl"], low["note"], low["status"]) == (
        "kl_low",
        0.01,
        "'a b'",
        "ok",
    )
    assert (high["variant"], high["kl"], high["note"]) == ("kl_high", 0.1, None)
    assert low["has_base_file"] and low["stage"] == "pipeline"
    assert high["per_variant.rm.acc"] == pytest.approx(0.6)
    assert (base / "kl_low" / "report" / "metrics.json").is_file()
    rows = list(csv.DictReader((base / "sweep.csv").open()))
    assert [r["kl"] for r in rows] == ["0.01", "0.1"]
    md = (base / "sweep.md").read_text().splitlines()
    assert md[0].startswith("| variant | status |") and md[2].startswith("| kl_low | ok | 0 |")
    assert len(md) == 4
    assert "--workdir=" in (base / "sweep_logs" / "kl_high.log").read_text()


def test_sweep_file_failure_custom_metrics_and_keys(tmp_path, fake_stage, monkeypatch):
    monkeypatch.setenv("FAKE_METRICS", "labels/metrics.json")
    spec = {
        "stage": "label",
        "metrics_file": "labels/metrics.json",
        "variants": {"ok": {"KL": 0.2}, "broken": "--gin.FAIL=True"},
    }
    (tmp_path / "s.json").write_text(json.dumps(spec))
    base = tmp_path / "b"
    argv = [
        f"--base_workdir={base}",
        f"--sweep_file={tmp_path / 's.json'}",
        f"--command={fake_stage}",
        "--keys=kl,per_variant.*",
    ]
    assert sweep.main(argv) == 1  # one variant failed
    table = json.loads((base / "sweep.json").read_text())
    assert table["columns"][4:] == ["kl", "per_variant.rm.acc"]
    ok, broken = table["rows"]
    assert ok["kl"] == 0.2 and ok["status"] == "ok"
    assert broken["status"] == "failed" and broken["returncode"] == 3 and broken["kl"] is None
    # Skipping complete runs: only the failed one runs again (and fails again).
    (base / "ok" / "labels" / "metrics.json").write_text(json.dumps({"kl": 9.0}))
    assert sweep.main(argv + ["--skip_complete"]) == 1
    rows = json.loads((base / "sweep.json").read_text())["rows"]
    assert rows[0]["status"] == "skipped" and rows[0]["kl"] == 9.0


def test_dry_run_tpu_launcher_prints_commands(tmp_path, capsys):
    rc = sweep.main(
        [
            "rl",
            "--base_workdir=gs://bucket/sw",
            "--launcher=tpu",
            "--tpu_args=--name v --zone z --restart_on_preemption",
            "--variant=a:--gin.X=1",
            "--variant=b:--gin.X=\"'two words'\"",
            "--dry_run",
            "--",
            "--gin_file=gin/experiments/demo.gin",
        ]
    )
    assert rc == 0
    lines = [shlex.split(x[2:]) for x in capsys.readouterr().out.splitlines() if x[:2] == "+ "]
    assert len(lines) == 2
    for cmd, (name, flag) in zip(lines, [("a", "--gin.X=1"), ("b", "--gin.X='two words'")]):
        assert cmd[0].endswith("launch/run_tpu_vm.sh")
        sep = cmd.index("--")
        assert cmd[1:sep] == ["--name", "v", "--zone", "z", "--restart_on_preemption"]
        assert cmd[sep + 1 :] == [
            "rl",
            "--gin_file=gin/experiments/demo.gin",
            flag,
            f"--workdir=gs://bucket/sw/{name}",
        ]
    assert not (tmp_path / "sweep.json").exists()


def test_spec_formats_and_errors(tmp_path):
    text = tmp_path / "s.txt"
    text.write_text("# ablation\nbase:\nkl: --gin.KL=0.1  --gin.N=\"'x y'\" --gin.M='a b'\n")
    spec = sweep.load_sweep_file(str(text))
    assert spec.variants == (
        sweep.Variant("base", ()),
        sweep.Variant("kl", ("--gin.KL=0.1", "--gin.N='x y'", "--gin.M=a b")),
    )
    yml = tmp_path / "s.yaml"
    yml.write_text(
        "stage: rl\ncommon_args: [--gin_file=a.gin]\nvariants:\n"
        "  - {name: t, gin: {rl.temp: 0.7, rl.on: true, name: \"'s'\"}}\n"
    )
    pytest.importorskip("yaml")
    spec = sweep.load_sweep_file(str(yml))
    assert spec.stage == "rl" and spec.common_args == ("--gin_file=a.gin",)
    assert spec.variants[0].args == ("--gin.rl.temp=0.7", "--gin.rl.on=True", "--gin.name='s'")

    text.write_text("ok: --gin.A=1\nbad line\n")
    with pytest.raises(sweep.SweepError, match=r"s\.txt:2:"):
        sweep.load_sweep_file(str(text))
    text.write_text("a: --gin.A=1\na: --gin.A=2\n")
    with pytest.raises(sweep.SweepError, match="defined twice"):
        sweep.load_sweep_file(str(text))
    with pytest.raises(sweep.SweepError, match="directory name"):
        sweep.parse_variant_flag("../x:--gin.A=1")
    bad_json = tmp_path / "s.json"
    bad_json.write_text('{"variants": {"a": ""}, "stages": "rl"}')
    with pytest.raises(sweep.SweepError, match="unknown field"):
        sweep.load_sweep_file(str(bad_json))


def test_flatten_metrics_and_missing_stage(tmp_path):
    flat = sweep_table.flatten_metrics({"a": 1, "b": {"c": 0.5, "d": [1]}, "e": None})
    assert flat == {"a": 1, "b.c": 0.5, "e": None}
    rc = sweep.main([f"--base_workdir={tmp_path}", "--variant=a:", "--dry_run"])
    assert rc == 2


def test_launch_sweep_sh_wrapper(tmp_path, fake_stage):
    proc = subprocess.run(
        [
            str(REPO / "launch" / "sweep.sh"),
            "evaluate",
            f"--base_workdir={tmp_path}",
            f"--command={fake_stage}",
            "--variant=only:--gin.KL=0.3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr
    assert "| only | ok | 0 |" in proc.stdout

"""The ablation axis: the names, the config key, the points and their switches, the ratio to all on
in the tables, `gpt2driver compare --ablations` and configs/ablations.yaml, with the stand-in
engine of conftest.py (each --no-<switch> makes it a quarter slower)."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from click.testing import CliRunner

from gpt2driver import names
from gpt2driver.cli import cli
from gpt2driver.engine.runner import engine_args
from gpt2driver.errors import BadInput, ConfigError
from gpt2driver.experiments.configs import config_path, load_config, parse_config
from gpt2driver.experiments.points import expand
from gpt2driver.experiments.sweep import run_sweep
from gpt2driver.tables.rows import POINT_FIELDS


def test_the_names_are_in_one_place():
    assert names.ABLATIONS == ("graph", "gemv", "fused", "split-attn", "pdl")  # docs/protocol.md
    assert names.ablation("none") == names.ALL_ON == "none"
    assert names.ablation(" PDL+graph ") == "graph+pdl"  # the order of ABLATIONS
    assert names.ablation("--no-split-attn") == "split-attn"
    assert names.ablation_flags("pdl+graph") == ["--no-graph", "--no-pdl"]
    assert names.ablation_flags("none") == []
    assert names.every_ablation() == ["none", *names.ABLATIONS]
    with pytest.raises(BadInput, match="unknown ablation 'turbo'.*graph\\+pdl"):
        names.ablation("graph+turbo")


def test_engine_args_carry_the_switches():
    assert engine_args("m.bin", ablate="graph+pdl")[-3:] == ["--no-graph", "--no-pdl", "-q"]
    assert engine_args("m.bin") == ["-e", "m.bin", "--greedy", "-q"]


def test_config_axis_and_points():
    cfg = parse_config({"name": "a", "variants": ["naive", "optimized"], "batch": [1, 4],
                        "ablate": ["none", "pdl+graph", "fused", "none"]})
    assert cfg.ablate == ["none", "graph+pdl", "fused"]
    points = expand(cfg)
    # naive runs once per B (all on); optimized once per ablation value
    assert [(p["variant"], p["ablate"], p["batch"]) for p in points] == [
        ("naive", "none", 1), ("optimized", "none", 1), ("optimized", "graph+pdl", 1),
        ("optimized", "fused", 1), ("naive", "none", 4), ("optimized", "none", 4),
        ("optimized", "graph+pdl", 4), ("optimized", "fused", 4)]
    assert len({p["id"] for p in points}) == len(points)
    with pytest.raises(ConfigError, match="ablate: unknown ablation 'turbo'"):
        parse_config({"ablate": ["turbo"]})


def test_ids_of_all_on_points_are_those_of_before_the_axis():
    """Results directories written before the ablation axis resume: the id of an ablate=none
    point is the hash of the point fields without ablate, as it was."""
    p = expand(parse_config({"name": "x", "batch": [2]}))[0]
    old_fields = [f for f in POINT_FIELDS if f != "ablate"]
    blob = json.dumps({k: p[k] for k in old_fields}, sort_keys=True)
    assert p["id"] == hashlib.sha1(blob.encode()).hexdigest()[:12]


def test_exclude_leaves_points_out():
    cfg = parse_config({"batch": [1, 64], "exclude": [{"variant": "naive", "batch": [64, 128]}]})
    assert [(p["variant"], p["batch"]) for p in expand(cfg)] == [
        ("naive", 1), ("kvonly", 1), ("optimized", 1), ("kvonly", 64), ("optimized", 64)]
    with pytest.raises(ConfigError, match="exclude: unknown field 'size'"):
        parse_config({"exclude": [{"size": 1}]})
    with pytest.raises(ConfigError, match="exclude: expected a list of mappings"):
        parse_config({"exclude": {"variant": "naive"}})


def test_the_preset():
    cfg = load_config(config_path("ablations"))
    assert cfg.variants == ["optimized"] and cfg.batch == [1, 4, 16] and cfg.precisions == ["BF16"]
    assert cfg.ablate == names.every_ablation()
    points = expand(cfg)
    assert len(points) == 3 * 6 and {p["ablate"] for p in points} == set(names.every_ablation())


def test_sweep_with_ablations(fake_engine, tmp_path, capsys):
    cfg = parse_config({"name": "abl", "variants": ["naive", "optimized"], "batch": [1, 4],
                        "gen": [8], "repeat": 1, "ablate": ["none", "graph", "graph+pdl"]})
    df = run_sweep(cfg, tmp_path / "res")
    calls = [c.split() for c in fake_engine.calls()]
    assert len(calls) == 8
    flags = {(c[0], c[c.index("-b") + 1], tuple(x for x in c if x.startswith("--no-"))) for c in calls}
    assert ("optimized", "4", ("--no-graph", "--no-pdl")) in flags and ("naive", "1", ()) in flags
    opt = df[df["variant"] == "optimized"].set_index(["batch", "ablate"])
    assert opt.loc[(1, "none"), "vs_all_on"] == pytest.approx(1.0)
    assert opt.loc[(1, "graph"), "vs_all_on"] == pytest.approx(1 / 1.25, rel=1e-3)
    assert opt.loc[(4, "graph+pdl"), "vs_all_on"] == pytest.approx(1 / 1.5, rel=1e-3)
    assert opt.loc[(4, "graph"), "speedup_vs_naive"] == pytest.approx(10 / 1.25, rel=1e-3)
    assert pd.isna(df[df["variant"] == "naive"]["vs_all_on"]).all()  # naive has no all-on peer
    csv = pd.read_csv(tmp_path / "res" / "results.csv")
    assert {"ablate", "vs_all_on"} <= set(csv.columns) and len(csv) == 8
    out = capsys.readouterr()
    assert "| ablate" in out.out and "vs all-on" in out.out
    assert "ablations (tokens/s of each switch off / all on):" in out.out and "0.800x" in out.out
    assert "[3/8] optimized no-graph B=1 gen=8" in out.err


def test_compare_ablations(fake_engine):
    res = CliRunner().invoke(cli, ["compare", "--ablations", "-b", "4", "-n", "8", "--repeat", "1"])
    assert res.exit_code == 0, res.output
    calls = [c.split() for c in fake_engine.calls()]
    assert [c[0] for c in calls] == ["optimized"] * 6
    assert [[x for x in c if x.startswith("--no-")] for c in calls] == [
        []] + [[f"--no-{n}"] for n in names.ABLATIONS]
    assert "vs all-on" in res.output and "| split-attn" in res.output
    assert "1.000x" in res.output and "0.800x" in res.output
    assert "[2/6] optimized --no-graph ..." in res.output


def test_compare_given_ablations_and_formats(fake_engine):
    res = CliRunner().invoke(cli, ["compare", "--ablate", "pdl+graph", "-n", "8", "--repeat", "1",
                                   "-o", "csv"])
    assert res.exit_code == 0, res.output
    assert [c.split()[-3:-1] for c in fake_engine.calls()][1] == ["--no-graph", "--no-pdl"]
    body = res.output[res.output.index("id,"):]
    rows = list(pd.read_csv(__import__("io").StringIO(body))["ablate"])
    assert rows == ["none", "graph+pdl"]
    res = CliRunner().invoke(cli, ["compare", "--ablate", "turbo"])
    assert res.exit_code == 2 and "unknown ablation 'turbo'" in res.output


def test_run_validate_profile_take_an_ablation(fake_engine, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["run", "--prompt-ids", "1", "-n", "2", "--ablate", "fused", "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["validate", "-n", "4", "--ablate", "split-attn"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["profile", "--ablate", "pdl", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    calls = [c.split() for c in fake_engine.calls()]
    assert [(c[0], [x for x in c if x.startswith("--no-")]) for c in calls] == [
        ("optimized", ["--no-fused"]), ("validate", ["--no-split-attn"]), ("profile", ["--no-pdl"])]
    res = runner.invoke(cli, ["run", "--ablate", "everything"])
    assert res.exit_code == 2 and "unknown ablation" in res.output

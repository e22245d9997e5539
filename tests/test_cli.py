import json

import click
import pytest
from click.testing import CliRunner

from gpt2driver.cli import cli, main
from gpt2driver.engine import build as build_mod
from gpt2driver.profilers import common as profiling


def all_commands(group=cli, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, prefix + (name,))


COMMANDS = [()] + list(all_commands())


@pytest.fixture
def runner():
    return CliRunner()


class FakeEncoding:
    """Characters as token ids (enough to test the run command without tiktoken's download)."""

    n_vocab = 50257

    def encode(self, text, allowed_special=()):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) if i < 0x110000 else "?" for i in ids)


def test_every_command_has_help(runner):
    names = {" ".join(c) for c in COMMANDS}
    assert {"build", "run", "compare", "validate", "sweep", "profile", "doctor", "checkpoint random",
            "checkpoint convert", "checkpoint info", "tokenizer export"} <= names
    for cmd in COMMANDS:
        res = runner.invoke(cli, [*cmd, "--help"])
        assert res.exit_code == 0, (cmd, res.output)
        assert "Usage:" in res.output
        assert len(res.output.splitlines()) > 3


def test_main_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "0.1.0" in capsys.readouterr().out


def test_no_gpu_is_a_clear_error(runner, monkeypatch):
    monkeypatch.setattr(build_mod, "detect_cc", lambda: (None, "nvidia-smi not found on PATH"))
    for args in (["build"], ["run"], ["validate"], ["compare"]):
        res = runner.invoke(cli, args)
        assert res.exit_code == 1, args
        assert "nvidia-smi not found on PATH" in res.output and "--cc" in res.output
        assert "Traceback" not in res.output


def test_build_reports(runner, monkeypatch, tmp_path):
    seen = []

    def fake(cc, precision, jobs=None, quiet=False):
        seen.append((cc, precision, jobs))
        return build_mod.BuildResult(tmp_path, ["naive", "kvonly"], "")

    monkeypatch.setattr(build_mod, "make_build", fake)
    monkeypatch.setattr(build_mod, "detect_cc", lambda: (90, ""))
    res = runner.invoke(cli, ["build", "-j", "3", "--precision", "FP32"])
    assert res.exit_code == 0, res.output
    assert "compute capability 9.0 (sm90)" in res.output and "rebuilt: naive, kvonly" in res.output
    assert str(tmp_path) in res.output and seen == [(90, "fp32", 3)]

    def broken(cc, precision, jobs=None, quiet=False):
        raise build_mod.BuildError("make failed (exit code 2): make ...\nnvcc fatal: bad arch")

    monkeypatch.setattr(build_mod, "make_build", broken)
    res = runner.invoke(cli, ["build", "--cc", "90"])
    assert res.exit_code == 1 and "nvcc fatal: bad arch" in res.output


def test_run_prints_text_and_speed(runner, fake_engine, monkeypatch):
    import gpt2driver.files.tokenizer as tok

    monkeypatch.setattr(tok, "get_encoding", lambda path=None: FakeEncoding())
    res = runner.invoke(cli, ["run", "--prompt", "Hi", "-b", "2", "-n", "3", "--variant", "kvonly"])
    assert res.exit_code == 0, res.output
    call = fake_engine.calls()[0].split()
    assert call[0] == "kvonly" and call[call.index("--prompt-ids") + 1] == "72,105"
    assert "--greedy" in call and call[call.index("-b") + 1] == "2"
    assert "--- row 1 ---" in res.output
    assert "kvonly B=2 gen=3 on Fake GPU 80GB" in res.output and "tok/s" in res.output


def test_run_json_and_sampling(runner, fake_engine, monkeypatch):
    import gpt2driver.files.tokenizer as tok

    def no_tokenizer(path=None):
        raise tok.TokenizerError("no network")

    monkeypatch.setattr(tok, "get_encoding", no_tokenizer)
    res = runner.invoke(cli, ["run", "--prompt-ids", "1, 2,3", "--temperature", "0.7", "--top-k", "5",
                              "--seed", "9", "--json", "-n", "2"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{"):])
    assert data["config"]["program"] == "optimized" and data["done"] == 0
    assert data["text"]["0"] == "50256 15496 15497"  # ids printed without a tokenizer
    call = fake_engine.calls()[0].split()
    assert call[call.index("-m") + 1] == "0" and call[call.index("--top-k") + 1] == "5"
    assert call[call.index("--prompt-ids") + 1] == "1,2,3"


@pytest.mark.parametrize("args, words", [
    (["run", "--prompt", "a", "--prompt-ids", "1"], "not both"),
    (["run", "--greedy", "--temperature", "0.5"], "--greedy cannot"),
    (["run", "--prompt-ids", "1,x", "--cc", "90"], "token ids"),
    (["run", "--variant", "turbo"], "turbo"),
    (["run", "-b", "0"], "-b"),
    (["validate", "--variants", "naive", "--cc", "90"], "kvonly, optimized"),
    (["profile", "--tool", "perf"], "perf"),
])
def test_usage_errors(runner, args, words, fake_engine):
    res = runner.invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert words in res.output and "Traceback" not in res.output


def test_run_failure_is_one_clear_error(runner, fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "optimized:8")
    res = runner.invoke(cli, ["run", "-b", "8", "--prompt-ids", "1"])
    assert res.exit_code == 1
    assert "Error: optimized exited with code 4" in res.output and "99999 MiB" in res.output


def test_compare(runner, fake_engine):
    res = runner.invoke(cli, ["compare", "-b", "2", "-n", "8", "--repeat", "2"])
    assert res.exit_code == 0, res.output
    assert [c.split()[0] for c in fake_engine.calls()] == ["naive", "kvonly", "optimized"]
    assert "vs naive" in res.output and "5.00x" in res.output and "10.00x" in res.output


def test_compare_bad_variant(runner, fake_engine):
    res = runner.invoke(cli, ["compare", "--variants", "naive,fast"])
    assert res.exit_code == 2 and "'fast' is not one of naive, kvonly, optimized" in res.output


def test_validate_pass_and_fail(runner, fake_engine, monkeypatch):
    res = runner.invoke(cli, ["validate", "-b", "1", "-n", "4", "--max-abs", "0.5"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith("PASS") and "worst steps of optimized" in res.output
    call = fake_engine.calls()[0].split()
    assert call[0] == "validate" and call[call.index("--max-abs") + 1] == "0.5"
    monkeypatch.setenv("FAKE_VALIDATE", "1")
    res = runner.invoke(cli, ["validate", "--worst", "1"])
    assert res.exit_code == 1
    assert res.output.strip().endswith("FAIL") and "0.9" in res.output


def test_sweep_dry_run_default_config(runner, fake_engine, tmp_path):
    res = runner.invoke(cli, ["sweep", "--dry-run", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "[9/9] optimized B=16 gen=512" in res.output and fake_engine.calls() == []


def test_sweep_runs_a_config(runner, fake_engine, tmp_path):
    cfg = tmp_path / "mini.yaml"
    cfg.write_text("name: mini\nvariants: [naive, optimized]\nbatch: [1]\ngen: [4]\nrepeat: 1\n")
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "results.csv").exists() and "10.00x" in res.output


def test_sweep_ctrl_c_exits_130(runner, fake_engine, tmp_path, monkeypatch):
    from gpt2driver.experiments import pointrunner

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(pointrunner, "run_binary", interrupted)
    res = runner.invoke(cli, ["sweep", "--out", str(tmp_path / "r")])
    assert res.exit_code == 130 and "rerun the same command to resume" in res.output


def test_sweep_config_errors(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nprecision: [BF8]\n")
    res = runner.invoke(cli, ["sweep", "--config", str(bad)])
    assert res.exit_code == 1 and "precision: 'BF8' is not one of FP32, FP16, BF16" in res.output
    from gpt2driver.experiments.configs import config_path

    res = runner.invoke(cli, ["sweep", "--config", str(config_path("profile"))])
    assert res.exit_code == 1 and "gpt2driver profile --config" in res.output


def test_profile_builtin(runner, fake_engine, tmp_path):
    res = runner.invoke(cli, ["profile", "-b", "1", "-b", "4", "--steps", "8", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    calls = [c.split() for c in fake_engine.calls()]
    assert len(calls) == 2 and all("--builtin" in c for c in calls)
    assert calls[1][calls[1].index("--steps") + 1] == "8"
    assert "optimized B=4 on Fake GPU 80GB: 0.42 ms/step" in res.output
    assert "| fc " in res.output and "%" in res.output


def test_profile_tools_not_installed(runner, fake_engine, monkeypatch):
    monkeypatch.setattr(profiling.shutil, "which", lambda tool: None)
    for tool in ("nsys", "ncu"):
        res = runner.invoke(cli, ["profile", "--tool", tool])
        assert res.exit_code == 1 and f"{tool} is not installed" in res.output
    assert fake_engine.calls() == []


def test_profile_config_and_installed_tool(runner, fake_engine, monkeypatch, tmp_path):
    """The config's tool (ncu) is used: with a found-but-missing ncu the run fails naming it."""
    from gpt2driver.experiments.configs import config_path

    monkeypatch.setattr(profiling.shutil, "which", lambda tool: f"/opt/{tool}")
    res = runner.invoke(cli, ["profile", "--config", str(config_path("profile")), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "cannot start /opt/ncu" in res.output
    res = runner.invoke(cli, ["profile", "--config", str(config_path("profile")), "--tool", "builtin",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert len(fake_engine.calls()) == 2  # B=1 and B=16 from the config


def test_checkpoint_commands(runner, tmp_path):
    out = tmp_path / "tiny.bin"
    res = runner.invoke(cli, ["checkpoint", "random", "--layers", "1", "--heads", "1", "--channels", "32",
                              "--max-seq-len", "32", "--dtype", "fp32", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and "num_layers" in res.output
    res = runner.invoke(cli, ["checkpoint", "info", "--json", str(out)])
    assert res.exit_code == 0 and json.loads(res.output)["ok"] is True
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 2048)
    res = runner.invoke(cli, ["checkpoint", "info", str(junk)])
    assert res.exit_code == 1 and "bad magic" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["checkpoint", "random", "--model", "gpt2", "--layers", "2", str(out)])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(cli, ["checkpoint", "random", "--layers", "2", str(out)])
    assert res.exit_code == 2 and "--heads" in res.output
    res = runner.invoke(cli, ["checkpoint", "convert", str(tmp_path), str(tmp_path / "o.bin")])
    assert res.exit_code == 1 and "safetensors" in res.output


def test_doctor(runner, monkeypatch):
    monkeypatch.setattr(build_mod, "detect_cc", lambda: (None, "nvidia-smi not found on PATH"))
    res = runner.invoke(cli, ["doctor"])
    assert res.exit_code == 1, res.output  # no GPU: the engine cannot run here
    for word in ("nvcc", "GPU", "compute capability", "cuBLAS", "nsys", "ncu"):
        assert word in res.output


def test_errors_leave_through_one_handler(runner, monkeypatch):
    """A DriverError becomes "Error: <first line>" (further lines indented) and its exit code."""
    from gpt2driver.errors import BuildError, Interrupted

    def broken(cc, precision, jobs=None, quiet=False):
        raise BuildError("make failed (exit code 2): make ...\nnvcc fatal: bad arch")

    monkeypatch.setattr(build_mod, "make_build", broken)
    res = runner.invoke(cli, ["build", "--cc", "90"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output == "Error: make failed (exit code 2): make ...\n  nvcc fatal: bad arch\n"

    def interrupted(cc, precision, jobs=None, quiet=False):
        raise Interrupted("interrupted: 3 point(s) kept")

    monkeypatch.setattr(build_mod, "make_build", interrupted)
    res = runner.invoke(cli, ["build", "--cc", "90"])
    assert res.exit_code == 130 and res.output == "Error: interrupted: 3 point(s) kept\n"

    def ctrl_c(cc, precision, jobs=None, quiet=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_mod, "make_build", ctrl_c)
    res = runner.invoke(cli, ["build", "--cc", "90"])
    assert res.exit_code == 130 and res.output == "Error: interrupted\n"


def test_output_formats_and_bin_dir(runner, fake_engine, tmp_path):
    import pandas as pd
    from io import StringIO

    res = runner.invoke(cli, ["compare", "-b", "2", "-n", "8", "--repeat", "1", "-o", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("[\n"):])
    assert [r["variant"] for r in rows] == ["naive", "kvonly", "optimized"]
    assert rows[2]["speedup_vs_naive"] == pytest.approx(10.0, rel=1e-3)
    cfg = tmp_path / "mini.yaml"
    cfg.write_text("name: mini\nvariants: [naive, optimized]\nbatch: [1]\ngen: [4]\nrepeat: 1\n")
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r"), "-o", "csv"])
    assert res.exit_code == 0, res.output
    csv = pd.read_csv(StringIO(res.output[res.output.index("id,"):]))
    assert list(csv["variant"]) == ["naive", "optimized"]
    # --bin-dir: the executables of another tree, nothing built
    builds = len(fake_engine.builds)
    other = tmp_path / "other"
    other.mkdir()
    for prog in ("naive", "optimized"):
        (other / prog).write_bytes((fake_engine.bin_dir / prog).read_bytes())
        (other / prog).chmod(0o755)
    res = runner.invoke(cli, ["compare", "--variants", "naive,optimized", "-n", "4", "--repeat", "1",
                              "--bin-dir", str(other)])
    assert res.exit_code == 0, res.output
    assert len(fake_engine.builds) == builds
    res = runner.invoke(cli, ["run", "--variant", "kvonly", "--bin-dir", str(other), "--prompt-ids", "1"])
    assert res.exit_code == 1 and f"cannot start {other / 'kvonly'}" in res.output


def test_python_m_gpt2driver():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "gpt2driver", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "0.1.0" in r.stdout

"""The driver under bad input and failure (issue 15): exit codes that tell the truth, one line per
mistake and no traceback, one pre-flight check for every command. CPU only: stand-in executables
(conftest's fake_engine) where a GPU would be needed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gpt2driver.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def error_lines(output: str):
    return [line for line in output.splitlines() if line.startswith("Error:")]


def one_error(res, code: int, *needles: str) -> str:
    """The run exited ``code`` with exactly one ``Error:`` line (no traceback) holding each needle."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output, res.output
    lines = error_lines(res.output)
    assert len(lines) == 1, res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# -- 1. a sweep with failed points exits non-zero -------------------------------------------------


def test_sweep_with_failed_points_exits_1_and_says_how_many(runner, fake_engine, tmp_path, monkeypatch):
    cfg = tmp_path / "mini.yaml"
    cfg.write_text("name: mini\nvariants: [naive, optimized]\nbatch: [1, 2]\ngen: [4]\nrepeat: 1\n")
    monkeypatch.setenv("FAKE_FAIL", "optimized:2")
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r")])
    one_error(res, 1, "1 of 4 point(s) failed", "optimized B=2")
    assert len(fake_engine.calls()) == 4  # the rest ran
    assert "| naive" in res.output  # the table is printed first


# -- 2, 3. a failed build says why: the Makefile's reason, once -----------------------------------

NO_NVCC_MAKE = ("Makefile:69: *** nvcc not found: not in CUDA_HOME=/x/bin nor on PATH: install the "
                "CUDA toolkit, or set CUDA_HOME to it (or NVCC to the compiler).  Stop.")
COMPILE_FAIL = """nvcc -O3 -c csrc/apps/naive.cu -o build/x/naive.cu.o
csrc/apps/naive.cu(12): error: identifier "foo" is undefined
make[1]: *** [Makefile:81: build/x/naive.cu.o] Error 1
make[1]: *** Waiting for unfinished jobs....
make: *** [Makefile:76: all] Error 2"""


def test_make_cause_is_the_makefiles_reason_or_the_compilers_error():
    from gpt2driver.engine.build import make_cause

    assert make_cause(NO_NVCC_MAKE).startswith("nvcc not found: not in CUDA_HOME=/x/bin")
    assert make_cause(COMPILE_FAIL) == 'csrc/apps/naive.cu(12): error: identifier "foo" is undefined'


def fake_make(monkeypatch, output: str, rc: int = 2):
    from gpt2driver.engine import build as build_mod

    monkeypatch.setattr(build_mod, "run_make", lambda cmd, cwd, quiet=True, keep=40, label="": (rc, output))
    monkeypatch.setattr(build_mod.shutil, "which", lambda name: f"/usr/bin/{name}")


def test_sweep_row_jsonl_and_stderr_carry_makes_reason(runner, monkeypatch, tmp_path):
    from gpt2driver.engine import build as build_mod
    from gpt2driver.experiments.store import read_jsonl

    fake_make(monkeypatch, NO_NVCC_MAKE)
    cfg = tmp_path / "mini.yaml"
    cfg.write_text("name: mini\nvariants: [naive]\nbatch: [1]\ngen: [4]\nrepeat: 1\n")
    monkeypatch.setattr(build_mod, "detect_cc", lambda: (90, ""))
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r"),
                              "--cc", "75"])
    assert res.exit_code == 1
    rows = read_jsonl(tmp_path / "r" / "results.jsonl")
    assert rows[0]["error"].startswith("build failed: nvcc not found")
    assert "FAILED: build failed: nvcc not found" in res.output  # the progress line on stderr
    assert "nvcc not found" in res.output.split("| naive")[1]  # the table's status cell


def test_build_error_says_the_cause_once(runner, monkeypatch):
    fake_make(monkeypatch, NO_NVCC_MAKE)
    res = runner.invoke(cli, ["build", "--cc", "75"])
    one_error(res, 1, "make failed (exit code 2): nvcc not found")
    assert res.output.count("nvcc not found") == 1, res.output


def test_makefile_names_a_missing_nvcc_in_one_line(tmp_path):
    import subprocess

    from buildutil import REPO_ROOT, wheel_cublas

    cublas = wheel_cublas()
    extra = [f"CUBLAS_HOME={cublas}"] if cublas else []
    proc = subprocess.run(["make", "--no-print-directory", "GPU_COMPUTE_CAPABILITY=75",
                           "CUDA_HOME=/nonexistent", "NVCC=/nonexistent/bin/nvcc", f"BUILD_ROOT={tmp_path}", *extra, "all"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert "nvcc not found" in lines[0]


# -- 10, 15. checkpoint random: only shapes the engine runs, never over a file silently ------------


def test_checkpoint_random_refuses_a_shape_the_engine_cannot_run(runner, tmp_path):
    out = tmp_path / "m.bin"
    res = runner.invoke(cli, ["checkpoint", "random", "--layers", "1", "--heads", "2",
                              "--channels", "32", "--max-seq-len", "8", str(out)])
    one_error(res, 2, "the engine cannot run this shape: head size 16 (channels 32 / num_heads 2)")
    assert not out.exists()
    # a shape the header cannot hold is the same kind of mistake: exit 2 too
    res = runner.invoke(cli, ["checkpoint", "random", "--layers", "1", "--heads", "3",
                              "--channels", "128", "--max-seq-len", "8", str(out)])
    one_error(res, 2, "channels (128) must be a multiple of num_heads (3)")
    assert not out.exists()


def test_checkpoint_info_says_whether_the_engine_runs_it(runner, tmp_path):
    from gpt2driver.files import checkpoint as ck

    odd = ck.make_random_checkpoint(tmp_path / "odd.bin", ck.ModelConfig.custom(1, 2, 32, 8, 100))
    res = runner.invoke(cli, ["checkpoint", "info", str(odd)])
    assert res.exit_code == 0, res.output
    assert "engine             head size 16 (channels 32 / num_heads 2) is not one the engine runs" \
        in res.output
    good = ck.make_random_checkpoint(tmp_path / "good.bin", ck.ModelConfig.custom(1, 1, 32, 8, 100))
    res = runner.invoke(cli, ["checkpoint", "info", "-o", "json", str(good)])
    assert res.exit_code == 0 and json.loads(res.output)["engine"] == "runs it"


def test_checkpoint_random_and_convert_need_force_to_replace(runner, tmp_path):
    out = tmp_path / "m.bin"
    out.write_bytes(b"mine")
    args = ["checkpoint", "random", "--layers", "1", "--heads", "1", "--channels", "32",
            "--max-seq-len", "8", str(out)]
    one_error(runner.invoke(cli, args), 2, f"{out} exists: give --force to replace it")
    assert out.read_bytes() == b"mine"
    res = runner.invoke(cli, args + ["--force"])
    assert res.exit_code == 0 and out.stat().st_size > 4
    one_error(runner.invoke(cli, ["checkpoint", "convert", str(tmp_path), str(out)]), 2,
              "exists: give --force")


def test_checkpoint_dtype_defaults_agree(runner):
    from gpt2driver.cli.files import checkpoint_convert, checkpoint_random

    dtype = {c.name: [p.default for p in c.params if p.name == "dtype"][0]
             for c in (checkpoint_random, checkpoint_convert)}
    assert dtype == {"random": "bf16", "convert": "bf16"}


# -- 5. one validated range for every timeout -----------------------------------------------------


@pytest.mark.parametrize("command", [["run"], ["validate"], ["profile"], ["compare"], ["bench"]])
@pytest.mark.parametrize("value", ["inf", "nan", "2147484", "0.5"])
def test_timeout_out_of_range_is_a_usage_error(runner, fake_engine, command, value):
    res = runner.invoke(cli, [*command, "--timeout", value])
    one_error(res, 2, "Invalid value for '--timeout'", "must be 1 to 1e+06 seconds")
    assert fake_engine.calls() == []


def test_timeout_range_in_configs_and_the_runner(tmp_path):
    from gpt2driver.engine.runner import run_captured
    from gpt2driver.errors import BadInput, ConfigError
    from gpt2driver.experiments.configs import parse_config

    assert parse_config({"timeout_s": 1e6}).timeout_s == 1e6
    for bad in (2147484, float("inf"), float("nan"), 0.5):
        with pytest.raises(ConfigError, match="timeout_s: must be 1 to 1e"):
            parse_config({"timeout_s": bad})
    with pytest.raises(BadInput, match="timeout"):
        run_captured(["true"], float("inf"))


# -- 7, 8. one pre-flight check (the checkpoint's header, read once) for every command ------------


@pytest.fixture
def truncated(tmp_path):
    from conftest import stand_in_checkpoint

    path = stand_in_checkpoint(tmp_path / "truncated.bin")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    return path


@pytest.mark.parametrize("command", [["run"], ["validate"], ["profile"], ["compare"],
                                     ["bench", "--no-hf"]])
def test_every_command_reads_the_checkpoint_before_running(runner, fake_engine, truncated,
                                                           command, tmp_path):
    res = runner.invoke(cli, [*command, "-e", str(truncated), "--cc", "90"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "truncated.bin: size mismatch" in "\n".join(error_lines(res.output)), res.output
    assert fake_engine.calls() == []


@pytest.mark.parametrize("args, needle", [
    (["run", "--prompt-ids", "7,50257"], "prompt token 50257 is outside the model's vocabulary 0..50256"),
    (["run", "-n", "1024"], "prompt (1 tokens) + gen 1024 = 1025 exceeds the model's max_seq_len 1024"),
    (["run", "--prompt-len", "1000", "-n", "25"], "= 1025 exceeds"),
    (["validate", "-n", "2000"], "exceeds the model's max_seq_len 1024"),
    (["profile", "--steps", "1020"], "exceeds the model's max_seq_len 1024"),
    (["profile", "--tool", "trace", "--steps", "600"], "exceeds the model's max_seq_len 1024"),
])
def test_requests_that_do_not_fit_the_model_stop_before_the_executable(runner, fake_engine, args,
                                                                       needle):
    res = runner.invoke(cli, args)
    one_error(res, 2, needle)
    assert fake_engine.calls() == []


def test_points_that_do_not_fit_the_model_exit_2_in_every_experiment(runner, fake_engine, tmp_path):
    """compare, bench and sweep: a point beyond the model's context is the same request error as in
    run / validate / profile (exit 2), found before any point runs."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\nvariants: [naive]\ngen: [1024]\n")
    for args in (["compare", "-n", "1024"], ["bench", "-n", "1024", "--no-hf"],
                 ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r")]):
        res = runner.invoke(cli, args)
        one_error(res, 2, "prompt (1 tokens) + gen 1024 = 1025 exceeds the model's max_seq_len 1024")
    assert fake_engine.calls() == []


def test_a_shape_the_engine_cannot_run_stops_every_command(runner, fake_engine, tmp_path):
    from conftest import stand_in_checkpoint
    from gpt2driver.files.checkpoint import ModelConfig

    odd = stand_in_checkpoint(tmp_path / "odd.bin", ModelConfig.custom(2, 4, 32, 64, 100))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: c\ncheckpoint: {odd}\nvariants: [naive]\ngen: [4]\n")
    for args in (["run", "-e", str(odd)], ["profile", "-e", str(odd)],
                 ["compare", "-e", str(odd)], ["sweep", "--config", str(cfg), "--out",
                                               str(tmp_path / "r")]):
        res = runner.invoke(cli, args)
        one_error(res, 1, "head size 8 (channels 32 / num_heads 4) is not one the engine runs")
    assert fake_engine.calls() == []


def test_a_given_tokenizer_that_fails_is_not_told_to_give_one(runner, fake_engine, tmp_path):
    """--tokenizer FILE that cannot be read: one line naming the file, without 'give --tokenizer FILE'."""
    bad = tmp_path / "bad_tok.bin"
    bad.write_bytes(b"not a tokenizer")
    line = one_error(runner.invoke(cli, ["run", "--prompt", "hi", "--tokenizer", str(bad)]), 1, "bad_tok.bin")
    assert "give --tokenizer" not in line
    assert fake_engine.calls() == []


def small_tokenizer(path, vocab: int):
    """A byte-level llm.c tokenizer of ``vocab`` tokens (every byte, then pairs); EOT last."""
    from gpt2driver.files.tokenizer import write_tokenizer

    tokens = [bytes([b]) for b in range(256)]
    tokens += [bytes([1 + i // 256, i % 256]) for i in range(vocab - 257)] + [b"<eot>"]
    return write_tokenizer(path, tokens, eot_id=vocab - 1)


def test_run_checks_the_tokenizer_against_the_model_and_passes_it(runner, fake_engine, tmp_path):
    small = small_tokenizer(tmp_path / "tok1000.bin", 1000)
    res = runner.invoke(cli, ["run", "--prompt", "hi", "--tokenizer", str(small)])
    one_error(res, 1, f"tokenizer {small} has 1000 tokens but the model's vocab_size is 50257")
    assert fake_engine.calls() == []
    full = small_tokenizer(tmp_path / "tok.bin", 50257)
    res = runner.invoke(cli, ["run", "--prompt", "hi", "--tokenizer", str(full), "-n", "3"])
    assert res.exit_code == 0, res.output
    call = fake_engine.calls()[0].split()
    assert call[call.index("-tk") + 1] == str(full)


# -- 11. duplicate points run once ----------------------------------------------------------------


def test_duplicate_values_make_one_point(runner, fake_engine, tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("name: dup\nvariants: [naive, naive]\nbatch: [1, 1]\ngen: [4]\nrepeat: 1\n")
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert len(fake_engine.calls()) == 1
    res = runner.invoke(cli, ["bench", "-b", "2", "-b", "2", "--variants", "naive", "-n", "4",
                              "--no-hf", "--copy-gbps", "1000", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert len(fake_engine.calls()) == 2


# -- 12. offline tokenizer: one short line each ---------------------------------------------------


def offline(monkeypatch):
    import tiktoken

    def fail(name):
        raise ConnectionError("HTTPSConnectionPool(host='openaipublic.blob.core.windows.net', "
                              "port=443): Max retries exceeded with url: /gpt-2/encodings/main/"
                              "vocab.bpe (Caused by NameResolutionError(...)) " * 3)

    monkeypatch.setattr(tiktoken, "get_encoding", fail)
    monkeypatch.delenv("GPT2DRIVER_TOKENIZER", raising=False)


def test_tokenizer_export_offline_is_one_short_line(runner, monkeypatch, tmp_path):
    offline(monkeypatch)
    line = one_error(runner.invoke(cli, ["tokenizer", "export", str(tmp_path / "t.bin")]), 1,
                     "cannot load tiktoken's gpt2 encoding", "export it where the network is")
    assert len(line) < 160 and "--tokenizer" not in line


def test_run_without_a_tokenizer_notes_it_in_one_short_line(runner, fake_engine, monkeypatch):
    offline(monkeypatch)
    res = runner.invoke(cli, ["run", "--prompt-ids", "1", "-n", "2"])
    assert res.exit_code == 0, res.output
    notes = [l for l in res.output.splitlines() if l.startswith("note: no tokenizer")]
    assert len(notes) == 1 and len(notes[0]) < 160, notes
    line = one_error(runner.invoke(cli, ["run", "--prompt", "hi"]), 1, "--tokenizer FILE")
    assert len(line) < 160


# -- 6. a results folder that cannot be written: one line, before the first point ----------------


def read_only(monkeypatch, what: str):
    import errno

    from gpt2driver.experiments import store

    def refuse(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", a[0] if a else None)

    if what == "probe":
        monkeypatch.setattr(store.tempfile, "mkstemp", refuse)
    else:
        monkeypatch.setattr(store, what, refuse)


@pytest.mark.parametrize("command", ["sweep", "bench"])
def test_an_unwritable_results_folder_stops_before_the_first_point(runner, fake_engine, tmp_path,
                                                                   monkeypatch, command):
    out = tmp_path / "r"
    out.mkdir()
    read_only(monkeypatch, "probe")
    args = (["sweep", "--out", str(out)] if command == "sweep"
            else ["bench", "--no-hf", "-b", "1", "--out", str(out)])
    one_error(runner.invoke(cli, args), 1, f"cannot write to the results directory {out}",
              "Read-only file system")
    assert fake_engine.calls() == []


def test_a_later_write_error_is_one_line(runner, fake_engine, tmp_path, monkeypatch):
    read_only(monkeypatch, "append_jsonl")
    res = runner.invoke(cli, ["sweep", "--out", str(tmp_path / "r")])
    one_error(res, 1, "cannot record a result in", "results.jsonl: Read-only file system")
    assert len(fake_engine.calls()) == 1


# -- 4. doctor: exit 1 when the main job cannot run here, and what bench and the tests use ---------


def test_doctor_exits_1_naming_what_the_engine_lacks(runner, monkeypatch):
    from gpt2driver import doctor
    from gpt2driver.engine import build as build_mod

    monkeypatch.setattr(build_mod, "detect_cc", lambda: (None, build_mod.NO_NVIDIA_SMI))
    real_which = doctor.shutil.which
    monkeypatch.setattr(doctor.shutil, "which",
                        lambda name: None if name in ("nvcc", "nvidia-smi") else real_which(name))
    monkeypatch.setenv("CUDA_HOME", "/nonexistent")
    res = runner.invoke(cli, ["doctor"])
    one_error(res, 1, "the engine cannot be built and run here: missing nvcc", "GPU")
    names = [line.split("  ")[0] for line in res.output.splitlines()]
    for row in ("make", "C++ compiler", "nvcc", "cuBLAS", "GPU", "torch", "transformers",
                "tokenizer"):
        assert row in names, (row, res.output)
    assert "none found: nvidia-smi not found on PATH (no NVIDIA driver?)" in res.output


def test_doctor_exits_0_when_everything_is_there(runner, monkeypatch):
    from gpt2driver import doctor

    monkeypatch.setattr(doctor, "doctor_report", lambda: [doctor.Check("nvcc", "/x/nvcc", True, True),
                                                          doctor.Check("torch", "not installed", False)])
    res = runner.invoke(cli, ["doctor"])
    assert res.exit_code == 0 and "Error" not in res.output


# -- 11. one range, one wording, one exit code for the same thing ----------------------------------


@pytest.mark.parametrize("args", [["build", "--cc", "61"], ["run", "--cc", "10"],
                                  ["sweep", "--cc", "52", "--dry-run"], ["profile", "--cc", "69"]])
def test_cc_below_70_is_refused_as_the_makefile_does(runner, fake_engine, args):
    one_error(runner.invoke(cli, args), 2, "Invalid value for '--cc'", "70<=x")


def test_cc_in_configs_and_detected(tmp_path, monkeypatch):
    from gpt2driver.engine import build as build_mod
    from gpt2driver.errors import BuildError, ConfigError
    from gpt2driver.experiments.configs import parse_config

    with pytest.raises(ConfigError, match="cc: must be >= 70"):
        parse_config({"cc": 61})
    with pytest.raises(ConfigError, match="cc: must be <= 999, got 1000"):  # the range of --cc
        parse_config({"cc": 1000})
    assert parse_config({"cc": 999}).cc == 999
    monkeypatch.setattr(build_mod, "detect_cc", lambda: (61, ""))
    with pytest.raises(BuildError, match="compute capability 61 is older than the 70"):
        build_mod.resolve_cc(None)


def test_unknown_variants_are_usage_errors_everywhere(runner, fake_engine):
    for args in (["compare", "--variants", "naive,fast"], ["bench", "--variants", "fast"],
                 ["validate", "--variants", "naive"]):
        one_error(runner.invoke(cli, args), 2, "is not one of")
    assert fake_engine.calls() == []


@pytest.mark.parametrize("flag", ["--max-abs", "--max-rmse"])
def test_negative_tolerances_are_refused(runner, fake_engine, flag):
    one_error(runner.invoke(cli, ["validate", flag, "-1"]), 2, f"Invalid value for '{flag}'")


@pytest.mark.parametrize("spec", ["0,x", "", "-1", "0,0"])
def test_gpus_syntax_is_checked_before_anything(runner, fake_engine, tmp_path, spec, monkeypatch):
    from gpt2driver.experiments.executors import local

    monkeypatch.setattr(local, "list_gpus", lambda: pytest.fail("nvidia-smi asked"))
    res = runner.invoke(cli, ["sweep", "--gpus", spec, "--out", str(tmp_path / "r")])
    one_error(res, 2, "Invalid value for '--gpus'")


def test_no_gpu_is_worded_one_way(runner, monkeypatch, tmp_path):
    from gpt2driver.engine import build as build_mod
    from gpt2driver.experiments.executors import local

    monkeypatch.setattr(build_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    for args in (["build"], ["run"], ["sweep", "--gpus", "all", "--out", str(tmp_path / "r")]):
        one_error(runner.invoke(cli, args), 1, build_mod.NO_NVIDIA_SMI)


# -- 13. installed without the repository: one line saying to install with -e --------------------


@pytest.mark.parametrize("args", [["build", "--cc", "90"], ["sweep", "--dry-run"]])
def test_a_copy_without_the_repository_says_to_install_editable(runner, monkeypatch, tmp_path,
                                                                args):
    from gpt2driver import paths

    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path / "site-packages")
    one_error(runner.invoke(cli, args), 1, "installed without its repository (no Makefile in",
              "pip install -e")


def test_doctor_without_the_repository_says_so(runner, monkeypatch, tmp_path):
    """doctor in a copy installed without its repository names that as what the engine lacks."""
    from gpt2driver import doctor, paths

    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path / "site-packages")
    row = doctor.repository_check()
    assert not row.ok and row.needed and "installed without its repository" in row.status
    res = runner.invoke(cli, ["doctor"])
    assert res.exit_code == 1 and "repository" in error_lines(res.output)[-1], res.output


# -- 14. profile's copy bandwidth: measured as bench does, or given; never an H100's figure -------


def test_profile_measures_the_copy_bandwidth_or_says_it_could_not(runner, fake_engine, tmp_path,
                                                                 monkeypatch):
    from gpt2driver.errors import BenchError
    from gpt2driver.experiments import floor

    bw = {"gbps": 4200.0, "gbps_min": 4100.0, "gbps_max": 4300.0, "nbytes": 1 << 30,
          "repeat": 20, "device": "NVIDIA H200"}
    monkeypatch.setattr(floor, "measure_copy_bandwidth", lambda: bw)
    res = runner.invoke(cli, ["profile", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "copy bandwidth: 4200 GB/s on NVIDIA H200 (measured: torch copy of 1024 MiB" in res.output
    assert "of the copy bandwidth (4200 GB/s)" in res.output and "3000" not in res.output
    res = runner.invoke(cli, ["profile", "--out", str(tmp_path), "--copy-gbps", "1234"])
    assert "copy bandwidth: 1234 GB/s (given with --copy-gbps)" in res.output
    assert "of the copy bandwidth (1234 GB/s)" in res.output

    def no_torch():
        raise BenchError("torch is not installed (pip install torch)")

    monkeypatch.setattr(floor, "measure_copy_bandwidth", no_torch)
    res = runner.invoke(cli, ["profile", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "copy bandwidth: not measured (torch is not installed" in res.output
    assert "% of the copy bandwidth (" not in res.output


# -- 15. bench without Hugging Face shows no Hugging Face; titled plots; the README's variables ---


def test_bench_no_hf_prints_no_hugging_face(runner, fake_engine, tmp_path):
    res = runner.invoke(cli, ["bench", "--no-hf", "-b", "1", "-n", "4", "--copy-gbps", "1000",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "Hugging Face" not in res.output and "HF" not in res.output, res.output
    assert "vs naive" in res.output


def test_sweep_and_bench_plots_have_a_title(runner, fake_engine, tmp_path, monkeypatch):
    from gpt2driver.experiments import sweep
    from gpt2driver.experiments.bench import run as bench_run

    titles = []

    def fake_plot(df, path, title=None):
        titles.append(title)

    monkeypatch.setattr(sweep, "plot", fake_plot)
    monkeypatch.setattr(bench_run, "plot", fake_plot)
    cfg = tmp_path / "mini.yaml"
    cfg.write_text("name: mini\nvariants: [naive]\nbatch: [1]\ngen: [4]\nrepeat: 1\n")
    assert runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r")]).exit_code == 0
    assert runner.invoke(cli, ["bench", "--no-hf", "-b", "1", "-n", "4", "--out",
                               str(tmp_path / "b")]).exit_code == 0
    assert titles == ["sweep mini: tokens/s against B on Fake GPU 80GB",
                      "bench: gpt2, tokens/s against B on Fake GPU 80GB"]


def test_readme_names_every_environment_variable_the_driver_reads():
    import re

    from buildutil import REPO_ROOT

    code = "\n".join(p.read_text() for p in (REPO_ROOT / "gpt2driver").rglob("*.py"))
    read = set(re.findall(r"GPT2DRIVER_[A-Z_]+", code))
    readme = (REPO_ROOT / "README.md").read_text()
    assert read >= {"GPT2DRIVER_HOME", "GPT2DRIVER_BUILD_DIR", "GPT2DRIVER_TOKENIZER"}
    section = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    for name in sorted(read) + ["CUDA_HOME", "CUBLAS_HOME"]:
        assert f"`{name}`" in section, name


# -- 11. -o is the printed format in every command that prints a result ---------------------------


@pytest.mark.parametrize("args", [["run", "--prompt-ids", "1", "-n", "2"], ["compare", "-n", "4"],
                                  ["profile"], ["bench", "--no-hf", "-b", "1", "-n", "4"]])
def test_dash_o_json_prints_json_everywhere(runner, fake_engine, tmp_path, args):
    out = ["--out", str(tmp_path / "o")] if args[0] in ("profile", "bench") else []
    res = CliRunner().invoke(cli, [*args, *out, "-o", "json"])
    assert res.exit_code == 0, res.output
    start = min(i for i in (res.stdout.find("["), res.stdout.find("{")) if i >= 0)
    assert json.loads(res.stdout[start:])


# -- 16. progress bars: rich, on stderr, only on a terminal and without --quiet --------------------


@pytest.fixture
def bars(monkeypatch):
    """Every bar opened: [description, total, advanced], with bars drawn nowhere."""
    import contextlib

    from gpt2driver import progress

    opened = []

    class Recorder(progress.Bar):
        def __init__(self, entry):
            super().__init__()
            self.entry = entry

        def advance(self, n=1):
            self.entry[2] += n

    @contextlib.contextmanager
    def bar(description, total=None):
        opened.append([description, total, 0])
        yield Recorder(opened[-1])

    monkeypatch.setattr(progress, "bar", bar)
    monkeypatch.setattr(progress, "enabled", lambda: True)
    return opened


def test_long_work_opens_a_bar(bars, runner, fake_engine, tmp_path, make_script, monkeypatch):
    from gpt2driver.engine.build import run_make
    from gpt2driver.files import checkpoint as ck

    make = make_script("make", """
        import sys
        for src in ("a.cu", "b.cu", "c.cpp"):
            print(f"nvcc -O3 -c csrc/{src} -o build/{src}.o")
    """)
    assert run_make([str(make)], tmp_path, quiet=True, label="building sm90_bf16")[0] == 0
    ck.make_random_checkpoint(tmp_path / "m.bin", ck.ModelConfig.custom(1, 1, 32, 8, 100))
    cfg = tmp_path / "mini.yaml"
    cfg.write_text("name: mini\nvariants: [naive, optimized]\nbatch: [1]\ngen: [4]\nrepeat: 1\n")
    assert runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r")]).exit_code == 0
    assert runner.invoke(cli, ["bench", "--no-hf", "-b", "1", "-n", "4", "--out",
                               str(tmp_path / "b")]).exit_code == 0
    assert runner.invoke(cli, ["compare", "-n", "4"]).exit_code == 0
    params = ck.ModelConfig.custom(1, 1, 32, 8, 100).num_parameters
    assert bars == [["building sm90_bf16", 3, 3], ["writing m.bin", params, params],
                    ["sweep", 2, 2], ["bench", 3, 3], ["compare", 3, 3]]


def test_bars_draw_on_a_terminal_and_not_with_quiet(runner, fake_engine, tmp_path, monkeypatch):
    from gpt2driver import progress

    monkeypatch.setattr(progress, "is_terminal", lambda: True)
    cfg = tmp_path / "mini.yaml"
    cfg.write_text("name: mini\nvariants: [naive]\nbatch: [1]\ngen: [4]\nrepeat: 1\n")
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "━" in res.stderr and "━" not in res.stdout  # rich's bar, on stderr only
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "q"),
                              "--quiet"])
    assert res.exit_code == 0 and "━" not in res.output
    progress.set_quiet(False)


def test_no_bars_when_stderr_is_not_a_terminal(runner, fake_engine, tmp_path):
    from gpt2driver import progress

    assert not progress.enabled()  # CliRunner's stderr, as CI's, is no terminal
    res = runner.invoke(cli, ["compare", "-n", "4"])
    assert res.exit_code == 0 and "━" not in res.output and "\x1b[" not in res.output


# -- 17. a GPU without torch: the GPU tests' skip reason says what to install ---------------------


def test_gpu_tests_without_torch_say_what_to_install(tmp_path, make_script):
    import importlib.util
    import os
    import subprocess
    import sys

    from buildutil import REPO_ROOT

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here: the GPU tests would run")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    make_script("bin/nvidia-smi", 'print("GPU 0: Stand-in GPU (UUID: GPU-0)")\n')
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(REPO_ROOT / "tests" / "test_gpu_engine.py")], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 or proc.returncode == 5, proc.stdout[-3000:]
    assert 'torch is not installed' in proc.stdout and 'pip install -e ".[test,gpu]"' in proc.stdout, \
        proc.stdout[-3000:]


def test_readme_has_the_gpu_tests_install_line():
    from buildutil import GPU_TESTS_INSTALL, REPO_ROOT
    import tomllib

    readme = (REPO_ROOT / "README.md").read_text()
    assert GPU_TESTS_INSTALL in readme.replace('pip install -e ".[test,gpu]" &&', GPU_TESTS_INSTALL)
    assert '".[test,gpu]"' in readme
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("torch") for d in extras["gpu"])
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("rich") for d in deps)  # the progress bars

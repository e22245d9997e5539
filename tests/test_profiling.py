"""gpt2driver.profilers and the ``profile`` command on the CPU: command lines, the nsys / ncu / builtin
parsers against documented (tests/fixtures/profiling/) and captured (tests/fixtures/device/) outputs, and
every error path through stand-in ``nsys`` / ``ncu`` executables put first on PATH."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import FIXTURES, write_script
from gpt2driver import profilers as P
from gpt2driver.cli import cli
from gpt2driver.errors import RunError
from gpt2driver.protocol import parse_output

PROF = FIXTURES / "profiling"
DEV = FIXTURES / "device"
BF16_MMA = "linear_mma_kernel<1, __nv_bfloat16>"

# One script standing in for both profilers. FAKE_PROF_MODE: ok | legacy (nsys stats refuses the current
# report names) | empty (nothing captured) | perm (no access to the performance counters) | noreport
# (nsys writes no report) | hang. Every call is appended to FAKE_PROF_LOG as a JSON argv.
FAKE_PROFILER = r'''
import json, os, shutil, subprocess, sys, time
tool = os.path.basename(sys.argv[0])
a = sys.argv[1:]
mode = os.environ.get("FAKE_PROF_MODE", "ok")
fx = os.environ["FAKE_PROF_FIXTURES"]
with open(os.environ["FAKE_PROF_LOG"], "a") as f:
    f.write(json.dumps([tool] + a) + "\n")
if mode == "hang":
    time.sleep(60)

def run_app(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    return p.returncode

if tool == "nsys" and a[0] == "profile":
    out = a[a.index("-o") + 1]
    print("Collecting data...")
    rc = run_app(a[a.index("--force-overwrite") + 2:])
    if mode != "noreport":
        open(out + ".nsys-rep", "w").write("not a real report")
        print("Generated:\n    " + out + ".nsys-rep")
    sys.exit(0)
if tool == "nsys" and a[0] == "stats":
    reports = a[a.index("--report") + 1].split(",")
    prefix = a[a.index("--output") + 1]
    print("Generating SQLite file " + a[-1].replace(".nsys-rep", ".sqlite") + " from " + a[-1])
    if mode == "legacy" and "cuda_gpu_kern_sum" in reports:
        sys.stderr.write("ERROR: Report 'cuda_gpu_kern_sum' could not be found.\n")
        sys.exit(1)
    for r in reports:
        print("Processing [" + a[-1] + "] with [" + r + ".py]... ")
        if mode == "empty" and r in ("cuda_gpu_kern_sum", "gpukernsum"):
            print("SKIPPED: " + a[-1] + " does not contain CUDA kernel data.")
            continue
        shutil.copy(os.path.join(fx, "nsys_" + r + ".csv"), prefix + "_" + r + ".csv")
    sys.exit(0)
if tool == "ncu":
    log = a[a.index("--log-file") + 1]
    rc = run_app(a[a.index("--log-file") + 2:])
    with open(log, "w") as f:
        f.write("==PROF== Connected to process 4242 (" + a[a.index("--log-file") + 2] + ")\n")
        if mode == "perm":
            f.write("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU "
                    "Performance Counters on the target device 0. For instructions on enabling "
                    "permissions and to get more information see https://developer.nvidia.com/ERR_NVGPUCTRPERM\n")
        elif mode == "empty":
            f.write("==PROF== Disconnected from process 4242\n==WARNING== No kernels were profiled.\n")
        else:
            f.write(open(os.path.join(fx, os.environ.get("FAKE_NCU_CSV", "ncu_metrics.csv"))).read())
    sys.exit(rc or (1 if mode == "perm" else 0))
sys.stderr.write("fake " + tool + ": unexpected arguments\n")
sys.exit(2)
'''


@pytest.fixture
def profilers(tmp_path, monkeypatch, fake_engine):
    """Stand-in nsys and ncu first on PATH (over the fake engine). mode(m) switches their behaviour,
    calls() lists their argvs, engine() the fake profile executable's."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("nsys", "ncu"):
        write_script(tools / name, FAKE_PROFILER)
    log = tmp_path / "profilers.log"
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_PROF_FIXTURES", str(PROF))
    monkeypatch.setenv("FAKE_PROF_LOG", str(log))
    monkeypatch.setenv("FAKE_PROF_MODE", "ok")
    monkeypatch.delenv("FAKE_NCU_CSV", raising=False)
    return SimpleNamespace(
        mode=lambda m: monkeypatch.setenv("FAKE_PROF_MODE", m),
        calls=lambda: [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else [],
        engine=fake_engine.calls, binary=fake_engine.bin_dir / "profile", model=fake_engine.model,
        out=tmp_path / "results")


def args_for(model, builtin=False, steps=2):
    return P.profile_args(model, "optimized", 1, steps, 1, None, builtin=builtin)


# ------------------------------------------------------------------------------------------------
# Command lines
# ------------------------------------------------------------------------------------------------


def test_profile_args():
    a = P.profile_args(Path("m.bin"), "kvonly", 4, 3, 2, 64)
    assert a[:2] == ["-e", "m.bin"] and a[a.index("-b") + 1] == "4" and a[a.index("--warmup") + 1] == "2"
    assert a[a.index("--prompt-len") + 1] == "64" and "-q" in a
    assert a[-4:] == ["--variant", "kvonly", "--steps", "3"] and "--builtin" not in a
    assert P.profile_args(Path("m.bin"), builtin=True)[-1] == "--builtin"


def test_nsys_commands():
    cmd = P.nsys_command(Path("bin/profile"), ["-e", "m.bin", "-q"], Path("r/profile"))
    assert cmd == ["nsys", "profile", "-t", "cuda,nvtx", "--capture-range=nvtx",
                   "--nvtx-capture=MEASURE@decode", "--capture-range-end=stop-shutdown",
                   "-o", "r/profile", "--force-overwrite", "true", "bin/profile", "-e", "m.bin", "-q"]
    assert "--capture-range-end=none" in P.nsys_command(Path("p"), [], Path("o"), range_end="none")
    assert P.nsys_stats_command(Path("r/profile.nsys-rep"), Path("r/stats")) == [
        "nsys", "stats", "--report", "cuda_gpu_kern_sum,nvtx_sum", "--format", "csv",
        "--output", "r/stats", "r/profile.nsys-rep"]
    assert P.nsys_stats_command(Path("x"), Path("s"), legacy=True)[3] == "gpukernsum,nvtxsum"


def test_ncu_command_defaults():
    cmd = P.ncu_command(Path("bin/profile"), ["-e", "m.bin"], Path("r/ncu.csv"))
    assert cmd[:6] == ["ncu", "--nvtx", "--nvtx-include", "decode@MEASURE/", "--clock-control", "none"]
    assert cmd[cmd.index("--metrics") + 1].split(",") == list(P.NCU_DEFAULT_METRICS)
    assert cmd[-8:] == ["--csv", "--print-units", "base", "--log-file", "r/ncu.csv", "bin/profile",
                        "-e", "m.bin"]
    assert "--kernel-name" not in cmd and "--launch-count" not in cmd and "--section" not in cmd


def test_prefill_phase_commands():
    """--phase prefill: the tools capture the PREFILL range instead of MEASURE."""
    assert P.PHASES == {"decode": "MEASURE", "prefill": "PREFILL"}
    cmd = P.ncu_command(Path("p"), [], Path("l.csv"), range_name="PREFILL")
    assert cmd[:4] == ["ncu", "--nvtx", "--nvtx-include", "decode@PREFILL/"]
    assert "--nvtx-capture=PREFILL@decode" in P.nsys_command(Path("p"), [], Path("o"), range_name="PREFILL")
    msg = P.empty_capture_message("ncu", "PREFILL")
    assert "PREFILL in domain decode was not hit" in msg and "--nvtx-include decode@PREFILL/" in msg
    assert "--steps" not in msg  # the measured steps have nothing to do with it
    assert "MEASURE in domain decode" in P.empty_capture_message("nsys")


def test_ncu_command_options():
    cmd = P.ncu_command(Path("p"), [], Path("l.csv"), metrics=["dram__bytes_read.sum"],
                        sections=["SpeedOfLight", "Occupancy"], clock_control="base",
                        kernel_regex="linear_mma|attention", launch_count=50)
    assert cmd[cmd.index("--clock-control") + 1] == "base"
    assert cmd[cmd.index("--kernel-name") + 1] == "regex:linear_mma|attention"
    assert cmd[cmd.index("--launch-count") + 1] == "50"
    assert [cmd[i + 1] for i, c in enumerate(cmd) if c == "--section"] == ["SpeedOfLight", "Occupancy"]
    # the duration is always collected (every column is normalised by it), never twice
    assert cmd[cmd.index("--metrics") + 1] == "gpu__time_duration.sum,dram__bytes_read.sum"
    only_sections = P.ncu_command(Path("p"), [], Path("l"), sections=["SpeedOfLight"], clock_control=None)
    assert only_sections[only_sections.index("--metrics") + 1] == "gpu__time_duration.sum"
    assert "--clock-control" not in only_sections
    dup = P.ncu_command(Path("p"), [], Path("l"), metrics=["gpu__time_duration.sum", "dram__bytes.sum"])
    assert dup[dup.index("--metrics") + 1] == "gpu__time_duration.sum,dram__bytes.sum"
    assert P.split_list(" a, b,,c ") == ["a", "b", "c"] and P.split_list(None) == []


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("full, short", [
    ("void unnamed>::linear_mma_kernel<1, __nv_bfloat16>(T2 *, const __nv_bfloat16 *, int, DecodeEpilogue)",
     BF16_MMA),
    ("void <unnamed>::linear_mma_kernel<1, float>(T2 *, int)", "linear_mma_kernel<1, float>"),
    ("void attention_split_kernel<2>(__nv_bfloat16 *, float *, const int *, int, int, int)",
     "attention_split_kernel<2>"),
    ("set_pos_kernel(int *, int, int)", "set_pos_kernel"),
    ("(anonymous namespace)::ln_kernel(float *)", "ln_kernel"),
    ("void cub::DeviceReduceKernel<cub::Policy<600>, float *, int>(float *, int)",
     "DeviceReduceKernel<cub::Policy<600>, float *, int>"),
    ("sample_kernel", "sample_kernel"),
])
def test_short_kernel_name(full, short):
    assert P.short_kernel_name(full) == short


def test_numbers_and_nvtx_cells():
    assert P.to_number("5,344") == 5344.0 and P.to_number("1,234,567.5") == 1234567.5
    assert P.to_number(7) == 7.0 and math.isnan(P.to_number("n/a")) and math.isnan(P.to_number(""))
    cell = ('1967  "decode:MEASURE:none:none:none:none:ASCII:MEASURE"  '
            '"decode:layer3:none:none:none:none:ASCII:layer3"  "decode:fc:none:none:none:none:ASCII:fc" ')
    assert P.nvtx_stage(cell) == ("fc", "layer3")
    assert P.nvtx_stage('1 "decode:MEASURE:none:none:none:none:ASCII:MEASURE" ') == ("(step)", "")
    assert P.nvtx_stage('1 "other:qkv:none:none:none:none:ASCII:qkv" ') == ("", "")
    assert P.nvtx_stage("") == ("", "")


def test_find_stats_csv(tmp_path):
    for name in ("stats_nvtx_sum.csv", "stats_cuda_gpu_kern_sum_base.csv", "profile_gpukernsum.csv",
                 "table.csv"):
        (tmp_path / name).write_text("x")
    prefix = tmp_path / "stats"
    assert P.find_stats_csv(prefix, ("nvtx_sum", "nvtxsum")).name == "stats_nvtx_sum.csv"
    assert P.find_stats_csv(prefix, ("cuda_gpu_kern_sum",)).name == "stats_cuda_gpu_kern_sum_base.csv"
    assert P.find_stats_csv(prefix, ("gpukernsum",)).name == "profile_gpukernsum.csv"  # named after the report
    assert P.find_stats_csv(prefix, ("cuda_api_sum",)) is None


def test_results_dir_is_unique(tmp_path):
    first = P.results_dir(tmp_path, "ncu", "optimized", 16, stamp="20260101-120000")
    assert first.name == "ncu-optimized-b16-20260101-120000"
    first.mkdir()
    assert P.results_dir(tmp_path, "ncu", "optimized", 16, stamp="20260101-120000").name.endswith("-2")


# ------------------------------------------------------------------------------------------------
# nsys parsers
# ------------------------------------------------------------------------------------------------


def test_nsys_kern_sum():
    df = P.parse_nsys_kern_sum((PROF / "nsys_cuda_gpu_kern_sum.csv").read_text(), steps=1)
    assert list(df.columns[:7]) == P.BASE_COLUMNS
    assert list(df["name"]) == [BF16_MMA, "attention_split_kernel<2>", "linear_mma_kernel<1, float>",
                                "sample_kernel", "embedding_kernel", "set_pos_kernel"]
    mma = df.iloc[0]
    assert mma["calls"] == 48 and mma["total_us"] == pytest.approx(311.232)
    assert mma["mean_us"] == pytest.approx(6.484) and mma["med_us"] == pytest.approx(6.016)
    assert mma["min_us"] == pytest.approx(3.968) and mma["max_us"] == pytest.approx(12.544)
    assert mma["share"] == pytest.approx(311232 / 466176)
    assert df["share"].sum() == pytest.approx(1.0)
    assert mma["kernel"].startswith("void <unnamed>::linear_mma_kernel<1, __nv_bfloat16>(T2 *")
    two = P.parse_nsys_kern_sum((PROF / "nsys_cuda_gpu_kern_sum.csv").read_text(), steps=2)
    assert two.iloc[0]["step_us"] == pytest.approx(311.232 / 2) and two.iloc[0]["calls_per_step"] == 24


def test_nsys_nvtx_sum_and_steps():
    ranges = P.parse_nsys_nvtx_sum((PROF / "nsys_nvtx_sum.csv").read_text())
    assert list(ranges["name"]) == ["MEASURE"] and ranges.iloc[0]["style"] == "PushPop"
    assert ranges.iloc[0]["mean_us"] == pytest.approx(512.64) and P.measured_steps(ranges) == 1
    assert P.measured_steps(None) == 1 and P.measured_steps(ranges.iloc[0:0], default=3) == 3


def test_nsys_legacy_reports():
    kern = P.parse_nsys_kern_sum((PROF / "nsys_gpukernsum.csv").read_text(), steps=2)
    assert kern.iloc[0]["name"] == BF16_MMA and kern.iloc[0]["calls"] == 48
    assert kern.iloc[0]["mean_us"] == pytest.approx(6.484) and math.isnan(kern.iloc[0]["med_us"])
    assert kern.iloc[0]["min_us"] == pytest.approx(3.968) and kern.iloc[0]["std_us"] == pytest.approx(2.8116)
    ranges = P.parse_nsys_nvtx_sum((PROF / "nsys_nvtxsum.csv").read_text())
    assert ranges.iloc[0]["name"] == "MEASURE" and P.measured_steps(ranges) == 2


def test_nsys_csv_after_progress_lines_and_other_time_units():
    text = ('Generating SQLite file r.sqlite from r.nsys-rep\nProcessing [r.sqlite] with [x.py]...\n\n'
            '"Time (%)","Total Time (us)","Instances","Avg (us)","Med (us)","Min (us)","Max (us)",'
            '"StdDev (us)","Name"\n'
            '"75.0","1,500.0","3","500.0","500.0","400.0","600.0","100.0","k_a(int)"\n'
            '"25.0","500.0","1","500.0","500.0","500.0","500.0","0.0","k_b"\n\nnext report\n')
    df = P.parse_nsys_kern_sum(text)
    assert list(df["name"]) == ["k_a", "k_b"] and df.iloc[0]["total_us"] == pytest.approx(1500.0)
    with pytest.raises(P.ProfilingError, match="no CSV table"):
        P.parse_nsys_kern_sum("SKIPPED: r.sqlite does not contain CUDA kernel data.\n")


# ------------------------------------------------------------------------------------------------
# ncu parsers
# ------------------------------------------------------------------------------------------------


def test_ncu_launches():
    launches = P.parse_ncu_csv((PROF / "ncu_metrics.csv").read_text())
    assert len(launches) == 12 and list(launches["id"]) == list(range(12))
    first = launches.iloc[0]
    assert (first["name"], first["stage"], first["layer"]) == (BF16_MMA, "qkv", "layer0")
    assert first["duration_ns"] == 12000 and first["dram_bytes"] == 24_000_000  # thousands separators
    assert first["dram_pct"] == 66.5 and first["occupancy_pct"] == 45.25 and first["sm_pct"] == 20.0
    assert first["block"] == "(256, 1, 1)" and first["grid"] == "(144, 1, 1)"
    assert launches.iloc[5]["stage"] == "(step)" and launches.iloc[4]["stage"] == "logits"


def test_ncu_table_per_kernel():
    df = P.ncu_table(P.parse_ncu_csv((PROF / "ncu_metrics.csv").read_text()), steps=2)
    by = df.set_index("name")
    assert list(df["name"]) == ["linear_mma_kernel<1, float>", BF16_MMA, "attention_split_kernel<2>",
                                "sample_kernel"]
    mma = by.loc[BF16_MMA]
    assert (mma["calls"], mma["calls_per_step"]) == (4, 2)
    assert mma["total_us"] == pytest.approx(48.0) and mma["step_us"] == pytest.approx(24.0)
    assert mma["mean_us"] == pytest.approx(12.0) and mma["dram_bytes"] == pytest.approx(24e6)
    assert mma["gbps"] == pytest.approx(2000.0) and mma["dram_pct"] == pytest.approx(66.5)
    assert mma["occupancy_pct"] == pytest.approx(45.25) and mma["sm_pct"] == pytest.approx(20.0)
    assert mma["share"] == pytest.approx(24 / 84) and df["share"].sum() == pytest.approx(1.0)
    assert mma["stages"] == "qkv" and by.loc["linear_mma_kernel<1, float>", "gbps"] == pytest.approx(1925.0)
    ceiling = P.with_ceiling(df, 4000.0).set_index("name")
    assert ceiling.loc[BF16_MMA, "copy_pct"] == pytest.approx(50.0) and "copy_pct" not in df


def test_ncu_table_per_stage():
    df = P.ncu_table(P.parse_ncu_csv((PROF / "ncu_metrics.csv").read_text()), steps=2, by="stage")
    by = df.set_index("name")
    assert set(by.index) == {"qkv", "attn", "logits", "(step)"}
    assert by.loc["qkv", "kernels"] == BF16_MMA and by.loc["qkv", "calls_per_step"] == 2
    assert by.loc["(step)", "kernels"] == "sample_kernel"
    with pytest.raises(ValueError):
        P.ncu_table(P.parse_ncu_csv((PROF / "ncu_metrics.csv").read_text()), by="layer")


def test_ncu_percentages_are_duration_weighted_and_units_scaled():
    head = '"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"\n'
    rows = [("0", "k(int)", "Duration", "usecond", "1"), ("0", "k(int)", "DRAM Throughput", "%", "10"),
            ("0", "k(int)", "dram__bytes_read.sum", "Kbyte", "600"),
            ("0", "k(int)", "dram__bytes_write.sum", "Kbyte", "400"),
            ("1", "k(int)", "Duration", "usecond", "3"), ("1", "k(int)", "DRAM Throughput", "%", "50"),
            ("1", "k(int)", "dram__bytes_read.sum", "Mbyte", "1"),
            ("1", "k(int)", "dram__bytes_write.sum", "byte", "0")]
    text = head + "".join(",".join(f'"{c}"' for c in r) + "\n" for r in rows)
    launches = P.parse_ncu_csv(text)
    assert list(launches["duration_ns"]) == [1000.0, 3000.0]
    assert list(launches["dram_bytes"]) == [1e6, 1e6]  # read + write when dram__bytes.sum is absent
    row = P.ncu_table(launches).iloc[0]
    assert row["dram_pct"] == pytest.approx((10 * 1 + 50 * 3) / 4)  # weighted by duration
    assert row["gbps"] == pytest.approx(2e6 / 4000) and row["stages"] == ""


def test_ncu_captured_on_the_device():
    """The real ncu output of one optimized B=1 step on the H100 (program output before the CSV)."""
    launches = P.parse_ncu_csv((DEV / "ncu_profile_b1.csv").read_text())
    assert len(launches) == 64 and "dram_bytes" not in launches
    df = P.ncu_table(launches, steps=1).set_index("name")
    assert df.loc[BF16_MMA, "calls"] == 48 and df.loc["attention_split_kernel<2>", "calls"] == 12
    assert df.loc[BF16_MMA, "stages"] == "qkv, attproj, fc, fcproj"
    assert df.loc["linear_mma_kernel<1, float>", "total_us"] == pytest.approx(173.44)
    assert df.loc["set_pos_kernel", "stages"] == "(step)"
    stages = P.ncu_table(launches, steps=1, by="stage").set_index("name")
    assert stages.loc["qkv", "calls"] == 12 and stages["share"].sum() == pytest.approx(1.0)


def test_ncu_v15_capture_gives_the_device_table():
    """`gpt2driver profile --tool ncu -b 1` on the H100 (v1.5 kernels, templated names, the driver's own
    metric set): parsing its kept ncu.csv here gives the table the driver printed there."""
    import json

    launches = P.parse_ncu_csv((DEV / "ncu_profile_v15_b1.csv").read_text())
    df = P.with_ceiling(P.ncu_table(launches, steps=1)).set_index("name")
    want = {r["name"]: r for r in json.loads((DEV / "ncu_profile_v15_b1_table.json").read_text())}
    assert set(df.index) == set(want)
    for name, r in want.items():
        for col in ("calls", "total_us", "share", "dram_bytes", "gbps", "dram_pct", "stages"):
            got = df.loc[name, col]
            assert got == (pytest.approx(r[col]) if isinstance(r[col], float) else r[col]), (name, col)
    # v1.5: greedy argmax lives in the logits product: no sample or set_pos kernel in the step
    assert "sample_kernel" not in df.index and "set_pos_kernel" not in df.index
    assert df.loc["linear_mma_kernel<1, 4, 1, float>", "stages"] == "logits"
    assert df["calls"].sum() == 62


def test_ncu_prefill_capture_from_the_device():
    """ncu over the PREFILL range on the H100 (B = 16, 512-token prompt; the first 40 launches):
    stages and layers come from the nested NVTX ranges under PREFILL."""
    text = (DEV / "ncu_prefill_b16.csv").read_text()
    df = P.parse_ncu_csv(text, "PREFILL")
    assert len(df) == 40 and list(df["id"]) == list(range(40))
    first = df.set_index("id")
    assert (first.loc[0, "name"], first.loc[0, "stage"]) == ("set_pos_kernel", "(step)")
    assert (first.loc[1, "stage"], first.loc[1, "layer"]) == ("embedding", "")
    assert (first.loc[5, "name"], first.loc[5, "stage"], first.loc[5, "layer"]) == (
        "attention_prefill_kernel", "attn", "layer0")
    assert first.loc[5, "grid"] == "(2, 12, 16)" and first.loc[5, "duration_ns"] == 16832.0
    stages = P.ncu_table(df, 1, "stage").set_index("name")
    assert stages.loc["fc", "calls"] == 8 and stages.loc["(step)", "calls"] == 1
    assert abs(stages["total_us"].sum() - df["duration_ns"].sum() / 1e3) < 1e-6
    # read as a decode capture, PREFILL would pass for a stage of the kernels directly under it
    assert P.parse_ncu_csv(text).set_index("id").loc[0, "stage"] == "PREFILL"


def test_ncu_csv_missing_or_empty():
    with pytest.raises(P.ProfilingError, match="MEASURE in domain decode"):
        P.parse_ncu_csv("==PROF== Disconnected from process 1\n==WARNING== No kernels were profiled.\n")
    with pytest.raises(P.ProfilingError, match="no ncu CSV"):
        P.parse_ncu_csv("something else\n")
    with pytest.raises(P.ProfilingError, match="duration"):
        P.parse_ncu_csv('"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"\n'
                        '"0","k","dram__bytes.sum","byte","1"\n')


# ------------------------------------------------------------------------------------------------
# builtin parser, summary, diagnosis
# ------------------------------------------------------------------------------------------------


def test_builtin_table_from_the_device_capture():
    res = parse_output((DEV / "profile_builtin_b1.txt").read_text())
    df = P.builtin_table(res)
    assert list(df.columns) == P.BASE_COLUMNS
    by = df.set_index("name")
    assert by.loc["attn", "calls"] == 192 and by.loc["attn", "calls_per_step"] == 12
    assert by.loc["attn", "total_us"] == pytest.approx(2058.43)
    assert by.loc["attn", "step_us"] == pytest.approx(2058.43 / 16)
    assert by.loc["attn", "share"] == pytest.approx(0.213657) and df.iloc[0]["name"] == "attn"
    assert df["share"].sum() == pytest.approx(1.0, abs=1e-3)


def test_builtin_share_in_percent_and_no_stages():
    res = parse_output("##GPT2D 1 stage name=a calls=2 total_ms=0.3 mean_us=150 share=75\n"
                       "##GPT2D 1 stage name=b calls=2 total_ms=0.1 mean_us=50 share=25\n"
                       "##GPT2D 1 profile variant=kvonly steps=2 step_ms=0.2 tokens_per_s=5000\n"
                       "##GPT2D 1 done status=0\n")
    assert list(P.builtin_table(res)["share"]) == [0.75, 0.25]
    with pytest.raises(P.ProfilingError, match="no stage lines"):
        P.builtin_table(parse_output("##GPT2D 1 done status=0\n"))


def test_summary_text():
    res = parse_output((DEV / "profile_builtin_b1.txt").read_text())
    rep = P.ProfileReport("builtin", P.builtin_table(res), 16, Path("out"), res, step_us=700.182)
    text = P.summarize(rep, copy_gbps=3000.0, top=3)
    assert "builtin: 16 measured steps, stages" in text and "step 700.2 us" in text
    assert "| attn " in text and "21.4%" in text and "top 3 of 8 stages: 58.6% of the stage time of a step" in text
    # weights (249 MB) read once per 700 us step: 356 GB/s = 11.9% of 3000 GB/s
    assert "at least 356 GB/s = 11.9% of the copy bandwidth (3000 GB/s)" in text
    launches = P.parse_ncu_csv((PROF / "ncu_metrics.csv").read_text())
    rep = P.ProfileReport("ncu", P.ncu_table(launches, 2), 2, Path("out"), notes=["n1"])
    text = P.summarize(rep, copy_gbps=3000.0, top=0)
    assert "ncu: 2 measured steps, kernels 84.0 us/step" in text
    assert "GB/s |" in text and "% of copy" in text and "|   2000 |        66.7 |" in text  # bf16 product: 2000 GB/s = 66.7%
    assert "DRAM traffic 126.6 MB/step at 1507 GB/s" in text and "50.2% of the copy bandwidth" in text
    assert "note: n1" in text and "top " not in text


def test_diagnose():
    assert "NVreg_RestrictProfilingToAdminUsers=0" in P.diagnose("ncu", "==ERROR== ERR_NVGPUCTRPERM - x")
    assert "root" in P.diagnose("nsys", "does not have permission to access NVIDIA GPU Performance Counters")
    assert "--steps" in P.diagnose("ncu", "==WARNING== No kernels were profiled.")
    nsys = P.diagnose("nsys", "SKIPPED: r.sqlite does not contain CUDA kernel data.")
    assert "MEASURE@decode" in nsys and "--kernel-regex" not in nsys
    assert P.diagnose("ncu", "all fine") is None


# ------------------------------------------------------------------------------------------------
# Running the stand-ins
# ------------------------------------------------------------------------------------------------


def test_run_ncu_keeps_files(profilers):
    out = profilers.out / "ncu"
    rep = P.run_ncu(profilers.binary, args_for(profilers.model), out, timeout=60,
                    options=P.NcuOptions(kernel_regex="mma", launch_count=12), exe="ncu")
    assert rep.steps == 2 and rep.result.config["device"] == "Fake GPU 80GB"
    assert rep.table.iloc[0]["name"] == "linear_mma_kernel<1, float>"
    assert any("--launch-count" in n for n in rep.notes)
    call = profilers.calls()[0]
    assert call[0] == "ncu" and call[call.index("--kernel-name") + 1] == "regex:mma"
    assert call[call.index("--log-file") + 1] == str(out / "ncu.csv")
    assert profilers.engine()[0].startswith("profile -e ") and "--builtin" not in profilers.engine()[0]
    names = {p.name for p in out.iterdir()}
    assert {"ncu.csv", "ncu.cmd.txt", "ncu.stdout.txt", "ncu.stderr.txt", "ncu_launches.csv"} <= names
    written = P.save_report(rep, "summary")
    assert {p.name for p in written} == {"table.csv", "table.json", "summary.txt", "meta.json"}
    assert pd.read_csv(out / "table.csv")["calls"].sum() == 12
    assert json.loads((out / "meta.json").read_text())["commands"][0][0] == "ncu"


def test_run_nsys(profilers):
    out = profilers.out / "nsys"
    rep = P.run_nsys(profilers.binary, args_for(profilers.model), out, timeout=60, exe="nsys")
    assert rep.steps == 1 and rep.step_us is None
    assert "NVTX ranges, host time per call (the program does not wait for the GPU inside them): " \
           "MEASURE 512.6 us" in rep.notes[0]
    assert rep.table.iloc[0]["name"] == BF16_MMA and rep.ranges.iloc[0]["name"] == "MEASURE"
    assert [c[1] for c in profilers.calls()] == ["profile", "stats"]
    assert profilers.calls()[1][-1] == str(out / "profile.nsys-rep")
    assert (out / "stats_cuda_gpu_kern_sum.csv").exists() and (out / "nsys_profile.stdout.txt").exists()
    assert rep.result.config["program"] == "profile"  # the program's lines pass through nsys
    P.save_report(rep)
    assert (out / "ranges.csv").exists()


def test_run_nsys_legacy_report_names(profilers):
    profilers.mode("legacy")
    rep = P.run_nsys(profilers.binary, args_for(profilers.model), profilers.out, timeout=60, exe="nsys")
    stats = [c for c in profilers.calls() if c[1] == "stats"]
    assert [c[3] for c in stats] == ["cuda_gpu_kern_sum,nvtx_sum", "gpukernsum,nvtxsum"]
    assert rep.steps == 2 and rep.table.iloc[0]["step_us"] == pytest.approx(311.232 / 2)


@pytest.mark.parametrize("tool, mode, words", [
    ("ncu", "perm", ["ERR_NVGPUCTRPERM", "root", "NVreg_RestrictProfilingToAdminUsers=0", "--tool builtin"]),
    ("ncu", "empty", ["ncu captured no kernels", "MEASURE in domain decode", "--steps", "--warmup"]),
    ("nsys", "empty", ["nsys captured no kernels", "MEASURE in domain decode", "--steps"]),
    ("nsys", "noreport", ["nsys wrote no report", "MEASURE in domain decode"]),
])
def test_profiler_errors(profilers, tool, mode, words):
    profilers.mode(mode)
    run = P.run_ncu if tool == "ncu" else P.run_nsys
    with pytest.raises(P.ProfilingError) as e:
        run(profilers.binary, args_for(profilers.model), profilers.out, 60, exe=tool)
    for w in words:
        assert w in str(e.value)
    assert "\n" not in str(e.value)


def test_program_failure_under_a_profiler(profilers, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "profile:1")
    for run, tool in ((P.run_ncu, "ncu"), (P.run_nsys, "nsys")):
        with pytest.raises(RunError) as e:
            run(profilers.binary, args_for(profilers.model), profilers.out / tool, 60, exe=tool)
        assert f"profile (under {tool}) failed with exit code 4" in str(e.value)
        assert "out of device memory: need 99999 MiB" in str(e.value)


def test_profiler_timeout_kills_it(profilers):
    profilers.mode("hang")
    with pytest.raises(RunError, match="ncu timed out after 1 s"):
        P.run_ncu(profilers.binary, args_for(profilers.model), profilers.out, 1, exe="ncu")


def test_cannot_start(tmp_path):
    with pytest.raises(P.ProfilingError, match="cannot start"):
        P.run_tool([str(tmp_path / "no-such-ncu")], timeout=5)


def test_run_builtin(profilers):
    rep = P.run_builtin(profilers.binary, args_for(profilers.model, builtin=True), profilers.out, 60)
    assert rep.tool == "builtin" and rep.steps == 2 and rep.step_us == pytest.approx(420.0)
    assert list(rep.table["name"]) == ["fc", "qkv", "attn"]
    assert (profilers.out / "builtin.result.json").exists() and "--builtin" in profilers.engine()[0]


# ------------------------------------------------------------------------------------------------
# The CLI
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def runner():
    return CliRunner()


def test_cli_ncu(runner, profilers, tmp_path):
    res = runner.invoke(cli, ["profile", "--tool", "ncu", "--steps", "2", "--warmup", "3", "-b", "1",
                              "-b", "4", "--out", str(profilers.out), "--copy-gbps", "4000",
                              "--clock-control", "base", "--kernel-regex", "mma", "--launch-count",
                              "100", "--metrics", "gpu__time_duration.sum,dram__bytes.sum",
                              "--json", str(tmp_path / "t.json"), "--csv", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    assert "optimized B=4 on Fake GPU 80GB (ncu)" in res.output
    assert "ncu: 2 measured steps, kernels 84.0 us/step" in res.output
    assert f"| {BF16_MMA}" in res.output and "2000" in res.output and "50.0" in res.output  # of 4000 GB/s
    calls = profilers.calls()
    assert len(calls) == 2 and all(c[0] == "ncu" for c in calls)
    c = calls[0]
    assert c[c.index("--clock-control") + 1] == "base" and c[c.index("--launch-count") + 1] == "100"
    assert c[c.index("--metrics") + 1] == "gpu__time_duration.sum,dram__bytes.sum"
    engine = profilers.engine()[1].split()
    assert engine[engine.index("-b") + 1] == "4" and engine[engine.index("--warmup") + 1] == "3"
    dirs = sorted(p.name for p in profilers.out.iterdir())
    assert len(dirs) == 2 and dirs[0].startswith("ncu-optimized-b1-") and dirs[1].startswith("ncu-optimized-b4-")
    for d in dirs:
        assert {"table.csv", "table.json", "summary.txt", "meta.json", "ncu.csv"} <= {
            p.name for p in (profilers.out / d).iterdir()}
    data = json.loads((tmp_path / "t.json").read_text())
    assert {r["batch"] for r in data} == {1, 4} and data[0]["tool"] == "ncu"
    assert {r["name"] for r in data} >= {BF16_MMA} and "copy_pct" in data[0]
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table.columns[:5]) == ["tool", "variant", "batch", "phase", "name"] and len(table) == 8
    assert set(table["phase"]) == {"decode"}


def test_cli_ncu_by_stage_and_config(runner, profilers):
    from gpt2driver.experiments.configs import config_path

    res = runner.invoke(cli, ["profile", "--config", str(config_path("profile")), "-b", "2", "--by", "stage",
                              "--out", str(profilers.out)])
    assert res.exit_code == 0, res.output
    assert "| qkv " in res.output and "kernels" in res.output
    c = profilers.calls()[0]
    assert c[0] == "ncu" and "dram__bytes.sum" in c[c.index("--metrics") + 1].split(",")
    engine = profilers.engine()[0].split()
    assert engine[engine.index("--steps") + 1] == "16" and engine[engine.index("--prompt-len") + 1] == "64"


def test_cli_ncu_prefill(runner, profilers, monkeypatch):
    monkeypatch.setenv("FAKE_NCU_CSV", str(DEV / "ncu_prefill_b16.csv"))
    res = runner.invoke(cli, ["profile", "--tool", "ncu", "--phase", "prefill", "--prompt-len", "64",
                              "--by", "stage", "--top", "0", "--out", str(profilers.out), "--csv", "-"])
    assert res.exit_code == 0, res.output
    assert "optimized B=1 on Fake GPU 80GB, prefill of 64 tokens (ncu)" in res.output
    assert "ncu: the prefill, kernels 635.7 us" in res.output and "calls/prefill" in res.output
    assert "MB/prefill" in res.output and "| attn " in res.output
    c = profilers.calls()[0]
    assert c[c.index("--nvtx-include") + 1] == "decode@PREFILL/"
    engine = profilers.engine()[0].split()  # no decode steps to speak of: as few as it takes
    assert engine[engine.index("--steps") + 1] == "1" and engine[engine.index("--warmup") + 1] == "0"
    assert engine[engine.index("--prompt-len") + 1] == "64"
    out = next(profilers.out.iterdir())
    assert out.name.startswith("ncu-prefill-optimized-b1-")
    assert json.loads((out / "meta.json").read_text())["phase"] == "prefill"
    assert "optimized,1,prefill,fc," in res.output  # the CSV rows carry the phase


def test_cli_nsys_prefill(runner, profilers):
    res = runner.invoke(cli, ["profile", "--tool", "nsys", "--phase", "prefill", "--steps", "3",
                              "--out", str(profilers.out)])
    assert res.exit_code == 0, res.output
    c = profilers.calls()[0]
    assert "--nvtx-capture=PREFILL@decode" in c
    assert "nsys: the prefill, kernels" in res.output and "nsys captures one step" not in res.output
    assert "read once a step" not in res.output  # weights per decode step mean nothing here
    engine = profilers.engine()[0].split()
    assert engine[engine.index("--steps") + 1] == "3"  # given explicitly: kept
    assert next(profilers.out.iterdir()).name.startswith("nsys-prefill-optimized-b1-")


def test_cli_nsys(runner, profilers):
    res = runner.invoke(cli, ["profile", "--tool", "nsys", "--variant", "kvonly", "--out", str(profilers.out),
                              "--top", "2", "--json", "-"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("["):])  # the summary went to stderr
    assert data[0]["name"] == BF16_MMA and data[0]["variant"] == "kvonly" and data[0]["calls"] == 48
    assert "nsys: 1 measured step, kernels 466.2 us/step" in res.output and "MEASURE 512.6 us" in res.output
    assert "weights (249 MB, read once a step) / kernel time: at least 534 GB/s" in res.output
    assert "top 2 of 6 kernels" in res.output and "nsys captures one step" in res.output
    assert [c[:2] for c in profilers.calls()] == [["nsys", "profile"], ["nsys", "stats"]]
    out = next(profilers.out.iterdir())
    assert out.name.startswith("nsys-kvonly-b1-") and (out / "ranges.csv").exists()


def test_cli_builtin_keeps_results(runner, profilers):
    res = runner.invoke(cli, ["profile", "--steps", "2", "--out", str(profilers.out), "--csv", "-"])
    assert res.exit_code == 0, res.output
    assert "optimized B=1 on Fake GPU 80GB: 0.42 ms/step" in res.output
    assert "tool,variant,batch,phase,name,calls" in res.output
    out = next(profilers.out.iterdir())
    assert out.name.startswith("builtin-optimized-b1-") and (out / "summary.txt").exists()
    assert "| fc " in (out / "summary.txt").read_text() and profilers.calls() == []


@pytest.mark.parametrize("tool, words", [("nsys", "Nsight Systems"), ("ncu", "Nsight Compute")])
def test_cli_tool_not_installed(runner, fake_engine, monkeypatch, tmp_path, tool, words):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    res = runner.invoke(cli, ["profile", "--tool", tool, "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert f"{tool} is not installed" in res.output and words in res.output
    assert "CUDA toolkit" in res.output and "--tool builtin" in res.output
    assert fake_engine.calls() == [] and "Traceback" not in res.output


@pytest.mark.parametrize("tool, mode, words", [
    ("ncu", "perm", "NVreg_RestrictProfilingToAdminUsers=0"),
    ("ncu", "empty", "MEASURE in domain decode was not hit"),
    ("nsys", "empty", "MEASURE in domain decode was not hit"),
])
def test_cli_profiler_errors_are_one_line(runner, profilers, tool, mode, words):
    profilers.mode(mode)
    res = runner.invoke(cli, ["profile", "--tool", tool, "--out", str(profilers.out)])
    assert res.exit_code == 1 and words in res.output
    assert res.output.startswith("Error: ") and res.output.count("\n") == 1


def test_cli_program_failure(runner, profilers, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "profile:1")
    res = runner.invoke(cli, ["profile", "--tool", "ncu", "--out", str(profilers.out)])
    assert res.exit_code == 1 and "exit code 4" in res.output and "99999 MiB" in res.output


@pytest.mark.parametrize("args, words", [
    (["--metrics", "x"], "--metrics applies to --tool ncu only"),
    (["--tool", "nsys", "--by", "stage"], "--by applies to --tool ncu only"),
    (["--launch-count", "3"], "--launch-count applies"),
    (["--clock-control", "fast"], "fast"),
    (["--copy-gbps", "0"], "--copy-gbps"),
    (["--phase", "prefill"], "--phase prefill needs --tool ncu or nsys"),
    (["--phase", "first"], "first"),
])
def test_cli_usage_errors(runner, fake_engine, args, words):
    res = runner.invoke(cli, ["profile", *args])
    assert res.exit_code == 2 and words in res.output and fake_engine.calls() == []

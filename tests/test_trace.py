"""``profile --trace`` and gpt2driver.profilers.trace on the CPU: the record parser, the tables, the Chrome
trace JSON and the PNG against the stored captures (tests/fixtures/trace/), the executable's own record writer
and its CUPTI loading through a host harness, and the error paths (no CUPTI, no GPU, an empty capture).

The synthetic captures in tests/fixtures/trace/ are the executable's record writer, emit_trace, run over
made-up CUPTI records by tests/fixtures/trace/trace_harness.cpp (a model of 2 layers whose steps are known
exactly), with the launch calls and without them (*_nolaunch: kernels placed by the synchronized LABEL step
and the order of correlation ids). The h200_* captures are real: the H200's output of an executable that
got no launch call from CUPTI and printed no kernel records (tests/fixtures/trace/README.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

import buildutil as bu
from conftest import FIXTURES, has_gpu, write_script
from gpt2driver.errors import ProfilingError, RunError
from gpt2driver.profilers import trace as T
from gpt2driver.profilers.trace import names as trace_names
from gpt2driver.profilers.trace import run as trace_run

TRACE = FIXTURES / "trace"
OPT = TRACE / "synthetic_optimized.txt"
KV = TRACE / "synthetic_kvonly.txt"
OPT_NOLAUNCH = TRACE / "synthetic_optimized_nolaunch.txt"
KV_NOLAUNCH = TRACE / "synthetic_kvonly_nolaunch.txt"
H200 = sorted(TRACE.glob("h200_*.txt"))
MMA = "linear_mma_kernel<1, 4, true, bf16>"


@pytest.fixture(scope="module")
def opt():
    return T.parse_trace(OPT.read_text())


@pytest.fixture(scope="module")
def kv():
    return T.parse_trace(KV.read_text())


# ------------------------------------------------------------------------------------------------
# The record parser
# ------------------------------------------------------------------------------------------------


def test_parse_graph_capture(opt):
    assert opt.steps == 4 and opt.info["graph"] == 1 and opt.info["label_match"] == "index"
    assert len(opt.kernels) == 4 * 12
    for s in range(4):
        ks = opt.step_kernels(s)
        assert [k.idx for k in ks] == list(range(12))
        assert [k.stage for k in ks] == ["embedding"] + ["qkv", "attn", "attproj", "fc", "fcproj"] * 2 + ["logits"]
        assert [k.layer for k in ks] == [""] + ["layer0"] * 5 + ["layer1"] * 5 + [""]
        assert len({k.corr for k in ks}) == 1  # one graph launch
        assert [k.node for k in ks] == list(range(100, 112))
    k = opt.step_kernels(0)[1]
    assert k.label == MMA and k.grid == "6,1,1" and k.block == "256,1,1" and k.stream == 13
    assert "linear_mma_kernel" in k.demangled and k.dur == 4200
    ms = [r for r in opt.ranges if r.name == "MEASURE"]
    assert [r.step for r in ms] == [0, 1, 2, 3] and all(r.launched == 12 and r.kernels == 12 for r in ms)
    assert opt.order == "none" and opt.info["placed_launch"] == 84 and opt.info["launched_from"] == "label_calls"
    assert ms[0].gpu_start == opt.step_kernels(0)[0].start and ms[0].gpu_end == opt.step_kernels(0)[-1].end
    assert opt.untraced_step_us == pytest.approx(49.5)
    assert len(opt.stamped) == 9 and all(st.step == 3 for st in opt.stamped)
    assert [st.label for st in opt.stamped] == ["qkv", "attproj", "fc", "fcproj"] * 2 + ["logits"]
    assert [s.name for s in opt.stamped[-1].stamps] == ["prologue", "wait", "input", "mma", "epilogue", "argmax"]
    assert len(opt.stamped[0].stamps) == 5  # no argmax outside the logits product


def test_parse_kvonly_capture(kv):
    assert kv.steps == 4 and kv.info["graph"] == 0 and not kv.stamped
    ks = kv.step_kernels(2)
    assert len(ks) == 26 and len({k.corr for k in ks}) == 26
    assert [k.stage for k in ks[:6]] == ["embedding", "ln1", "qkv", "attn", "attn", "attproj"]
    assert ks[2].label.startswith("sm90_xmma_gemm_bf16") and ks[2].label.endswith("…")  # extern "C": as is
    # the stage ranges of every step, with their kernels' GPU span
    st = [r for r in kv.ranges if r.step == 2 and r.name == "attn"]
    assert len(st) == 2 and all(r.depth == 2 and r.kernels == 2 for r in st)
    layer = next(r for r in kv.ranges if r.step == 2 and r.name == "layer0")
    assert layer.gpu_start == ks[1].start and layer.gpu_end == ks[11].end
    # runtime launches with their driver call nested inside count once; the driver-only launches under a callback
    # id the tracer does not list are launches by their kernel's correlation id
    assert next(r for r in kv.ranges if r.step == 2 and r.depth == 0).launched == 26
    assert kv.info["launch_by_corr"] == 14 and kv.info["launch_by_corr_ids"] == "d9999"


def test_unknown_records_and_keys_are_ignored():
    text = OPT.read_text().replace("##GPT2D 1 tracecheck", "##GPT2D 1 tracefuture x=1\n##GPT2D 1 tracecheck")
    text = text.replace(" stage=qkv ", " stage=qkv future_key=7 ")
    tl = T.parse_trace(text)
    assert len(tl.kernels) == 48 and tl.step_kernels(0)[1].stage == "qkv"


# ------------------------------------------------------------------------------------------------
# Kernels without their launch call (what CUPTI 13.0.1 gave on the H200 when asked by callback id)
# ------------------------------------------------------------------------------------------------


def _kernel_rows(tl):
    return [(k.step, k.idx, k.name, k.stage, k.layer, k.start, k.end, k.corr, k.node) for k in tl.kernels]


@pytest.mark.parametrize("with_calls, without_calls, order, sync, placed", [
    (OPT, OPT_NOLAUNCH, "graph-order", 12, 72), (KV, KV_NOLAUNCH, "label-order", 26, 156)])
def test_steps_without_launch_calls_are_the_same(with_calls, without_calls, order, sync, placed):
    """No API record at all: the LABEL step's kernels are placed by its synchronized ranges, the rest by
    correlation-id order (graph replays, or LABEL's count of one-by-one launches at a time); the steps,
    stages, layers and times are those the launch calls give."""
    ref, tl = T.parse_trace(with_calls.read_text()), T.parse_trace(without_calls.read_text())
    assert _kernel_rows(tl) == _kernel_rows(ref)
    assert tl.order == order and tl.info["launch_calls"] == 0 and tl.info["no_launch"] == tl.info["kernels"]
    assert tl.info["placed_sync"] == sync and tl.info["placed_order"] == placed and tl.info["unassigned"] == 0
    assert tl.info["order_found"] == tl.info["order_expected"] and tl.info["label_match"] == "index"
    assert [r.launched for r in tl.ranges if r.depth == 0] == [sync] * 4
    assert tl.info["launched_from"] == "label_kernels"
    assert [(c.name, c.ok) for c in T.checks(tl)] == [(c.name, c.ok) for c in T.checks(ref)]
    kernels = T.checks(tl)[0]
    assert kernels.ok and "from the LABEL step's kernels" in kernels.text and "correlation-id order" in kernels.text
    text = T.summarize(tl, top=3)
    assert "note: " in text and "came without their launch call" in text and f"{sync} by the synchronized LABEL" in text
    assert "0 runtime, 0 driver API records (asked for as cbids" in text
    assert "without their launch call" not in T.summarize(ref, top=3)


@pytest.mark.parametrize("key, value, words", [
    ("order_conflicts", 3, "3 kernels start before their step began"),
    ("order_mismatch", 1, "1 steps unlike the LABEL step"),
    ("order_found", 5, "5 graph replays after LABEL, 6 expected"),
    ("unassigned", 2, "2 kernel records placed nowhere or dropped")])
def test_launch_order_problems_fail_the_kernels_check(key, value, words):
    text = OPT_NOLAUNCH.read_text()
    line = next(l for l in text.splitlines() if l.startswith("##GPT2D 1 trace "))
    bad = T.parse_trace(text.replace(line, re.sub(rf" {key}=\d+ ", f" {key}={value} ", line)))
    check = T.checks(bad)[0]
    assert not check.ok and words in check.text, check.text


# ------------------------------------------------------------------------------------------------
# Kernel names
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mangled, lite", [
    ("_ZN2gd46_GLOBAL__N__78301228_13_linear_mma_cu_d62ec14bL17linear_mma_kernelILi1ELi4ELb1E13__nv_bfloat16EE"
     "vPT2_PKS2_S6_iiiNS_14DecodeEpilogueE", "gd::(anonymous namespace)::linear_mma_kernel<…>"),
    ("_ZN2gdL16attention_kernelILi64EEEvP13__nv_bfloat16PKS1_S4_S4_PKiiiii", "gd::attention_kernel<…>"),
    ("_ZN2gd11gelu_kernelEP13__nv_bfloat16m", "gd::gelu_kernel"),
    ("_Z10vec_kernelPfi", "vec_kernel"),
    ("_Z10vec_kernelIfEvPT_i", "vec_kernel<…>"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n", "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n"),
    ("_Zgarbage", "_Zgarbage"),
])
def test_demangle_lite(mangled, lite):
    assert T.demangle_lite(mangled) == lite


def test_demangle_with_and_without_cxxfilt(monkeypatch):
    names = ["_ZN2gd11gelu_kernelEP13__nv_bfloat16m", "sm90_gemm"]
    if trace_names.shutil.which("c++filt"):
        got = T.demangle(names)
        assert got["_ZN2gd11gelu_kernelEP13__nv_bfloat16m"] == "gd::gelu_kernel(__nv_bfloat16*, unsigned long)"
        assert got["sm90_gemm"] == "sm90_gemm"
    monkeypatch.setattr(trace_names.shutil, "which", lambda name: None)
    assert T.demangle(names) == {names[0]: "gd::gelu_kernel", "sm90_gemm": "sm90_gemm"}


def test_display_name():
    full = ("void gd::(anonymous namespace)::linear_mma_kernel<1, 4, true, __nv_bfloat16>(__nv_bfloat16*, "
            "__nv_bfloat16 const*, int, gd::DecodeEpilogue)")
    assert T.display_name(full) == MMA
    assert T.display_name("gd::(anonymous namespace)::linear_mma_kernel<…>") == "linear_mma_kernel<…>"
    assert T.display_name("x" * 60) == "x" * (T.NAME_WIDTH - 1) + "…"


# ------------------------------------------------------------------------------------------------
# Tables and checks
# ------------------------------------------------------------------------------------------------


def test_step_totals_add_up(opt, kv):
    for tl, step_us, kernel_us, idle_us in ((opt, 50.0, 52.6, 2.6), (kv, 139.1, 91.3, 47.8)):
        tot = T.step_totals(tl)
        assert list(tot["step"]) == [0, 1, 2, 3]
        assert (tot["kernels"] == tot["launched"]).all()
        assert tot["step_us"].tolist() == pytest.approx([step_us] * 4)
        assert tot["kernel_us"].tolist() == pytest.approx([kernel_us] * 4)
        # step = kernels + gaps exactly; the idle time is the positive part, what overlapped the rest
        assert (tot["kernel_us"] + tot["gap_us"]).tolist() == pytest.approx(tot["step_us"].tolist())
        assert tot["idle_us"].tolist() == pytest.approx([idle_us] * 4)
        assert (tot["idle_us"] - tot["overlap_us"]).tolist() == pytest.approx(tot["gap_us"].tolist())
        assert tot["idle_pct"].tolist() == pytest.approx((100 * tot["idle_us"] / tot["step_us"]).tolist())
        # the steps tile the traced time: from the kernel before the first step to the last kernel's end
        span = tl.kernels[-1].end - tl.info["prev_end"]
        assert tot["step_us"].sum() == pytest.approx(span / 1e3)
    assert T.step_totals(kv)["overlap_us"].tolist() == pytest.approx([0.0] * 4)


def test_kernel_table(opt):
    kt = T.kernel_table(opt)
    assert len(kt) == 48 and list(kt.columns[:9]) == ["step", "idx", "name", "stage", "layer", "start_us",
                                                      "dur_us", "gap_us", "end_us"]
    s0 = kt[kt["step"] == 0]
    assert s0["gap_us"].tolist() == pytest.approx([1.5, -0.7, 0.4, -0.5, -0.8, -0.6, -0.7, 0.4, -0.5, -0.8,
                                                   -0.6, 0.3])
    assert s0["start_us"].iloc[0] == pytest.approx(1.5)  # the first kernel's start is its gap
    assert s0["end_us"].iloc[-1] == pytest.approx(50.0)
    assert (s0["dur_us"] + s0["gap_us"]).sum() == pytest.approx(50.0)


def test_stamp_table(opt):
    st = T.stamp_table(opt)
    qkv = st[st["slot"] == 0]
    assert qkv["stage"].tolist() == ["prologue", "wait", "input", "mma", "epilogue"]
    assert qkv["idx"].iloc[0] == 1 and qkv["kernel"].iloc[0] == MMA and qkv["kernel_us"].iloc[0] == 4.2
    assert qkv["start_us"].iloc[0] == pytest.approx(0.0)  # the clocks are aligned on the first stamp
    assert (qkv["end_us"] <= 4.2).all() and (qkv["start_us"].diff().dropna() > 0).all()
    per = st.groupby("slot")["sum_pct"].first()
    assert len(per) == 9 and ((per - 100).abs() < 5).all()
    assert per.min() == pytest.approx(100 * opt.check["stamps_min"], rel=1e-4)


def test_checks_pass_on_the_captures(opt, kv):
    for tl, names in ((opt, ["kernels", "step", "stamps"]), (kv, ["kernels", "step"])):
        got = T.checks(tl)
        assert [c.name for c in got] == names and all(c.ok for c in got), got
    # the executable's own checks agree
    assert opt.check["kernels_ok"] == 1 and opt.check["step_ok"] == 1 and opt.check["stamps_ok"] == 1
    assert opt.check["step_us"] == pytest.approx(T.step_totals(opt)["step_us"].mean())


def _drop_kernel(text: str, step: int, idx: int) -> str:
    return "\n".join(l for l in text.splitlines() if f" kernel step={step} idx={idx} " not in l)


def test_checks_catch_what_is_off():
    text = OPT.read_text()
    bad = {c.name: c for c in T.checks(T.parse_trace(_drop_kernel(text, 2, 5)))}
    assert not bad["kernels"].ok and "11..12 seen, 12 launched" in bad["kernels"].text
    slow = text.replace("untraced_step_ms=0.0495", "untraced_step_ms=0.04")
    bad = {c.name: c for c in T.checks(T.parse_trace(slow))}
    assert not bad["step"].ok and "+25.0%" in bad["step"].text and bad["kernels"].ok
    # stages that cover a quarter more (or, as summed before covered_ns existed, less) than their kernel's time
    lines = [l.replace("covered_ns=4120", "covered_ns=5150") if " stampdef slot=0 " in l else l
             for l in text.splitlines()]
    bad = {c.name: c for c in T.checks(T.parse_trace("\n".join(lines)))}
    assert not bad["stamps"].ok and "1 off by more than 5%" in bad["stamps"].text
    # without covered_ns (older executables) the per-stage unions are summed: blocks in different stages at the
    # same time count twice, so stamps that cover their kernels exactly add up to more than their durations
    old = "\n".join(l.split(" covered_ns=")[0] if " stampdef slot=" in l else l for l in text.splitlines())
    bad = {c.name: c for c in T.checks(T.parse_trace(old))}
    assert not bad["stamps"].ok and "stage unions 102.4..112.3%" in bad["stamps"].text


def test_stamps_check_counts_launches_without_stamps():
    """A stamped launch whose kernel was not found, or one that found no free slot, fails the check."""
    text = OPT.read_text()
    lines = [l.replace(" idx=1 ", " idx=-1 ") if " stampdef slot=0 " in l else l for l in text.splitlines()
             if " stamp slot=0 " not in l]
    bad = {c.name: c for c in T.checks(T.parse_trace("\n".join(lines)))}["stamps"]
    assert not bad.ok and "1 stamped launches without their kernel's stamps" in bad.text
    bad = {c.name: c for c in T.checks(T.parse_trace(text.replace("stamp_missed=0", "stamp_missed=12")))}["stamps"]
    assert not bad.ok and "12 launches found no free stamp slot" in bad.text


def test_summary_text(opt, kv):
    text = T.summarize(opt, top=3)
    assert "4 measured steps (CUDA graph replays)" in text
    assert "check kernels: OK" in text and "check step: OK" in text and "check stamps: OK" in text
    assert MMA in text and "... 9 more kernels in kernels.csv" in text
    assert "check stamps" not in T.summarize(kv, top=0) and "more kernels" not in T.summarize(kv, top=0)


# ------------------------------------------------------------------------------------------------
# Chrome trace
# ------------------------------------------------------------------------------------------------


def assert_chrome_trace(doc):
    """Trace Event Format, JSON object form: what Perfetto and chrome://tracing need. Returns the
    complete events by (pid, tid) and the track names."""
    json.loads(json.dumps(doc))  # plain JSON
    assert isinstance(doc["traceEvents"], list) and doc["displayTimeUnit"] in ("ms", "ns")
    names, tracks = {}, defaultdict(list)
    for e in doc["traceEvents"]:
        assert {"name", "ph", "pid", "tid"} <= set(e), e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "process_sort_index", "thread_name", "thread_sort_index")
            assert isinstance(e["args"], dict)
            if e["name"] == "thread_name":
                names[(e["pid"], e["tid"])] = e["args"]["name"]
            continue
        assert e["ph"] == "X", e
        assert isinstance(e["ts"], (int, float)) and isinstance(e["dur"], (int, float)) and e["dur"] >= 0
        assert isinstance(e.get("args", {}), dict)
        tracks[(e["pid"], e["tid"])].append(e)
    for key, evs in tracks.items():
        assert key in names, f"track {key} has no thread_name"
        ts = [e["ts"] for e in evs]
        assert ts == sorted(ts), f"{names[key]}: timestamps not monotone"
        open_ends = []  # events of a track nest or follow each other, never overlap partly
        for e in evs:
            end = e["ts"] + e["dur"]
            while open_ends and open_ends[-1] <= e["ts"] + 1e-6:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1] + 1e-6, f"{names[key]}: {e['name']} overlaps partly"
            open_ends.append(end)
    return tracks, names


def test_chrome_trace_is_valid(opt, kv, tmp_path):
    for tl in (opt, kv):
        path = T.write_chrome_trace(tl, tmp_path / "trace.json")
        tracks, names = assert_chrome_trace(json.loads(path.read_text()))
        kernels = [e for evs in tracks.values() for e in evs if e["cat"] == "kernel"]
        assert len(kernels) == len(tl.kernels)
        k = next(e for e in kernels if e["args"]["step"] == 1 and e["args"]["idx"] == 1)
        src = tl.step_kernels(1)[1]
        assert k["ts"] == pytest.approx(src.start / 1e3) and k["dur"] == pytest.approx(src.dur / 1e3)  # us
        assert k["name"] == src.label and k["args"]["kernel"] == src.demangled and k["args"]["stage"] == src.stage
        assert "NVTX ranges (CPU)" in names.values() and "NVTX on the GPU: step" in names.values()


def test_chrome_trace_tracks(opt, kv):
    tracks, names = assert_chrome_trace(T.chrome_trace(opt))
    by_name = {names[k]: v for k, v in tracks.items()}
    # PDL: a kernel starting while the one before it runs goes to the stream's second lane
    assert len(by_name["stream 13"]) + len(by_name["stream 13 (overlap 1)"]) == 48
    assert by_name["stream 13 (overlap 1)"][0]["args"]["stage"] == "qkv"
    assert sorted(n for n in names.values() if n.startswith("stage stamps")) == sorted(
        f"stage stamps: {s}" for s in ("prologue", "wait", "input", "mma", "epilogue", "argmax"))
    assert len(by_name["stage stamps: mma"]) == 9 and len(by_name["stage stamps: argmax"]) == 1
    assert [e["name"] for e in by_name["NVTX on the GPU: step"]] == ["MEASURE"] * 4
    kv_names = set(assert_chrome_trace(T.chrome_trace(kv))[1].values())
    assert {"stream 13", "NVTX on the GPU: layer", "NVTX on the GPU: stage"} <= kv_names
    assert not any("overlap" in n or "stamps" in n for n in kv_names)


# ------------------------------------------------------------------------------------------------
# PNG
# ------------------------------------------------------------------------------------------------


def test_png(opt, kv, tmp_path):
    pytest.importorskip("matplotlib")
    for tl in (opt, kv):
        path = tmp_path / "timeline.png"
        assert T.plot_step(tl, path) is None
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10000


def test_png_without_matplotlib(opt, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    why = T.plot_step(opt, tmp_path / "x.png")
    assert why and "matplotlib" in why and "\n" not in why and not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------------------------
# run_trace through a stand-in executable, and the error paths
# ------------------------------------------------------------------------------------------------

# Stands in for the profile executable: FAKE_TRACE_MODE ok (prints FAKE_TRACE_FILE) | nocupti | nogpu |
# empty (a trace without kernels) | notrace (an old executable: no trace records). Its environment goes
# to FAKE_TRACE_ENV.
FAKE_PROFILE = r'''
import json, os, sys
json.dump({k: v for k, v in os.environ.items() if k.startswith("GPT2D")}, open(os.environ["FAKE_TRACE_ENV"], "w"))
mode = os.environ.get("FAKE_TRACE_MODE", "ok")
P = "##GPT2D 1"
def fail(msg):
    sys.stderr.write("error: " + msg + "\n")
    print(f'{P} error msg="{msg}"')
    print(f"{P} done status=4")
    sys.exit(4)
if mode == "nocupti":
    fail("cannot trace: no usable libcupti (looked in /usr/local/cuda/lib64 and the loader's path): install CUPTI")
if mode == "nogpu":
    fail("no CUDA device available (no CUDA-capable device is detected)")
text = open(os.environ["FAKE_TRACE_FILE"]).read()
if mode == "empty":
    text = "\n".join(l for l in text.splitlines() if " kernel " not in l)
if mode == "notrace":
    text = "\n".join(l for l in text.splitlines() if l.split(" ")[2] in ("config", "profile", "done"))
sys.stdout.write(text)
'''


@pytest.fixture
def fake_profile(tmp_path, monkeypatch):
    exe = write_script(tmp_path / "profile", FAKE_PROFILE)
    monkeypatch.setenv("FAKE_TRACE_FILE", str(OPT))
    monkeypatch.setenv("FAKE_TRACE_ENV", str(tmp_path / "env.json"))
    monkeypatch.setenv("FAKE_TRACE_MODE", "ok")
    return exe


def test_run_trace_writes_everything(fake_profile, tmp_path, monkeypatch):
    wheel = tmp_path / "wheel"
    monkeypatch.setattr(trace_run, "cupti_wheel_dir", lambda: wheel)
    monkeypatch.delenv(T.CUPTI_DIR_ENV, raising=False)
    out = tmp_path / "out"
    rep = T.run_trace(fake_profile, ["-e", "m.bin", "--trace", "--stamps"], out, timeout=60)
    assert json.loads((tmp_path / "env.json").read_text())[T.CUPTI_DIR_ENV] == str(wheel)
    assert rep.tool == "trace" and rep.steps == 4 and rep.step_us == pytest.approx(50.0)
    assert len(rep.table) == 48 and rep.result.config["variant"] == "optimized"
    for name in ("trace.json", "kernels.csv", "steps.csv", "links.csv", "stamps.csv", "budget.csv",
                 "trace.stdout.txt", "trace.cmd.txt"):
        assert (out / name).is_file(), name
    assert (out / "trace.stdout.txt").read_text() == OPT.read_text()
    assert_chrome_trace(json.loads((out / "trace.json").read_text()))
    assert rep.timeline.steps == 4 and "check step: OK" in T.summarize(rep.timeline, 3, rep.notes)
    assert (out / "timeline.png").is_file() == (importlib.util.find_spec("matplotlib") is not None)


def test_run_trace_keeps_a_given_cupti_dir(fake_profile, tmp_path, monkeypatch):
    monkeypatch.setattr(trace_run, "cupti_wheel_dir", lambda: tmp_path / "wheel")
    monkeypatch.setenv(T.CUPTI_DIR_ENV, "/mine")
    T.run_trace(fake_profile, [], tmp_path / "out", timeout=60)
    assert json.loads((tmp_path / "env.json").read_text())[T.CUPTI_DIR_ENV] == "/mine"


@pytest.mark.parametrize("mode, error, words", [
    ("nocupti", RunError, ["exit code 4", "cannot trace: no usable libcupti", "install CUPTI"]),
    ("nogpu", RunError, ["no CUDA device available"]),
    ("empty", ProfilingError, ["no kernel of a measured step", "CUPTI delivered 84 kernels"]),
    ("notrace", ProfilingError, ["printed no trace records", "rebuild"]),
])
def test_run_trace_errors_are_one_line(fake_profile, tmp_path, monkeypatch, mode, error, words):
    monkeypatch.setenv("FAKE_TRACE_MODE", mode)
    with pytest.raises(error) as e:
        T.run_trace(fake_profile, [], tmp_path / "out", timeout=60)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert (tmp_path / "out" / "trace.stdout.txt").is_file()  # what it printed is kept


def test_run_trace_on_the_h200_capture(fake_profile, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRACE_FILE", str(H200[0]))
    with pytest.raises(ProfilingError, match="no kernel record of a measured step") as e:
        T.run_trace(fake_profile, [], tmp_path / "out", timeout=60)
    assert "\n" not in str(e.value)
    assert (tmp_path / "out" / "trace.stdout.txt").read_text() == H200[0].read_text()


def test_run_trace_without_launch_calls(fake_profile, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRACE_FILE", str(OPT_NOLAUNCH))
    rep = T.run_trace(fake_profile, [], tmp_path / "out", timeout=60)
    assert rep.steps == 4 and len(rep.table) == 48 and rep.step_us == pytest.approx(50.0)
    assert "check kernels: OK" in T.summarize(rep.timeline, 3, rep.notes)


def test_parse_errors():
    with pytest.raises(ProfilingError, match="no trace records"):
        T.parse_trace("")
    empty = "\n".join(l for l in KV.read_text().splitlines() if " kernel " not in l)
    with pytest.raises(ProfilingError, match="holds no kernel of a measured step"):
        T.parse_trace(empty)


@pytest.mark.parametrize("capture", H200, ids=lambda p: p.name)
def test_h200_captures_without_kernel_records(capture):
    """The real H200 captures (CUPTI 13.0.1, no launch call delivered): that executable printed no kernel
    record, so no step can be rebuilt from them; the error names what is missing, in one line."""
    assert len(H200) == 2
    with pytest.raises(ProfilingError) as e:
        T.parse_trace(capture.read_text())
    msg = str(e.value)
    assert "\n" not in msg and "no kernel record of a measured step" in msg
    assert "1178 kernels and 0 launch calls" in msg and "printed no kernel records" in msg and "rebuild" in msg


# ------------------------------------------------------------------------------------------------
# The executable's side, without a GPU: its record writer and CUPTI loading (host harness), and the
# one-line errors of the real profile executable
# ------------------------------------------------------------------------------------------------

SOURCES = ["tests/fixtures/trace/trace_harness.cpp", "csrc/engine/trace.cpp", "csrc/common/check.cpp",
           "csrc/engine/protocol.cpp"]


def _nvcc_build(out: Path, *defines: str) -> Path:
    nvcc = bu.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    cmd = [str(nvcc), "-std=c++17", "-O1", "-x", "cu", *defines, *SOURCES, "-o", str(out)]
    proc = subprocess.run(cmd, cwd=bu.REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return _nvcc_build(tmp_path_factory.mktemp("harness") / "trace_harness")


@pytest.mark.slow
@pytest.mark.parametrize("mode, fixture", [("graph", OPT), ("kvonly", KV), ("graph-nolaunch", OPT_NOLAUNCH),
                                           ("kvonly-nolaunch", KV_NOLAUNCH)])
def test_fixtures_are_what_the_record_writer_writes(harness, mode, fixture):
    """The synthetic captures are the executable's own format: regenerate them with
    ``trace_harness graph > synthetic_optimized.txt`` (and the other modes: tests/fixtures/trace/README.md)
    when emit_trace changes."""
    proc = subprocess.run([str(harness), mode], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == fixture.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("mode, words", [
    ("graph", "11..12 seen, 12 launched"), ("kvonly", "25..26 seen"),
    ("graph-nolaunch", "1 steps unlike the LABEL step"),
    ("kvonly-nolaunch", "155 kernels after LABEL, 156 expected")])
def test_a_lost_kernel_record_fails_the_kernels_check(harness, mode, words):
    """One kernel record of a measured step lost: with launch calls a step holds one kernel less; without
    them the launch order no longer lines up with LABEL's (the executable's check and the driver's agree)."""
    proc = subprocess.run([str(harness), mode, "drop"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    tl = T.parse_trace(proc.stdout)
    kernels = T.checks(tl)[0]
    assert tl.check["kernels_ok"] == 0 and not kernels.ok and words in kernels.text, kernels.text


def _load(exe: Path, **env):
    proc = subprocess.run([str(exe), "load"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    rec = bu.parse_record_line(proc.stdout.strip())
    assert rec and rec[0] == "trace", proc.stdout + proc.stderr
    return proc.returncode, rec[1]


@pytest.mark.slow
def test_cupti_loading(harness, tmp_path):
    rc, f = _load(harness, GPT2D_CUPTI="/nonexistent/libcupti.so.13")
    assert rc == 4 and f["status"] == "unavailable" and f["why"].startswith("GPT2D_CUPTI: /nonexistent/")
    not_cupti = tmp_path / "libcupti.so"
    not_cupti.write_text("not a library")
    rc, f = _load(harness, GPT2D_CUPTI=str(not_cupti))
    assert rc == 4 and f["status"] == "unavailable" and str(not_cupti) in f["why"]
    toolkit = [p for d in ("lib64", "lib", "extras/CUPTI/lib64") for p in (bu.cuda_home() / d).glob("libcupti.so*")]
    if not toolkit:
        pytest.skip(f"no libcupti in {bu.cuda_home()}")
    rc, f = _load(harness, GPT2D_CUPTI="")
    assert rc == 0 and f["status"] == "ok" and "libcupti.so" in f["lib"] and int(f["cupti"]) >= 130000
    rc, f = _load(harness, GPT2D_CUPTI=str(toolkit[0]))  # a given file: that one
    assert rc == 0 and f["lib"] == str(toolkit[0])


@pytest.mark.slow
def test_build_without_cupti_headers(tmp_path):
    exe = _nvcc_build(tmp_path / "no_headers", "-DGD_NO_CUPTI")
    rc, f = _load(exe)
    assert rc == 4 and f["status"] == "unavailable" and "no CUPTI headers" in f["why"]


@pytest.fixture(scope="module")
def profile_exe(tmp_path_factory):
    problem = bu.toolchain_problem()
    if problem:
        pytest.skip(problem)
    out = bu.build_engine(80, "FP32", tmp_path_factory.mktemp("build"), bu.find_cublas())
    exe = out / "profile"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    if proc.returncode == 127 or "error while loading shared libraries" in proc.stderr:
        pytest.skip(f"profile cannot start here: {proc.stderr.strip()[:300]}")
    return exe


@pytest.mark.slow
def test_profile_executable_trace_errors(profile_exe, monkeypatch):
    r = bu.run_exe(profile_exe, "--help", timeout=60)
    assert "--trace" in r.stdout and "--stamps" in r.stdout
    r = bu.run_exe(profile_exe, "-e", "x.bin", "--stamps", timeout=60, expect=None)
    bu.assert_error_output(r, 2, "--stamps needs --trace")
    r = bu.run_exe(profile_exe, "-e", "x.bin", "--trace", "--builtin", timeout=60, expect=None)
    bu.assert_error_output(r, 2, "--trace and --builtin")
    # no CUPTI: one line, before the device is looked at
    monkeypatch.setenv("GPT2D_CUPTI", "/nonexistent/libcupti.so.13")
    r = bu.run_exe(profile_exe, "-e", "x.bin", "--trace", timeout=60, expect=None)
    bu.assert_error_output(r, 4, "cannot trace: GPT2D_CUPTI: /nonexistent/libcupti.so.13")
    # without --trace CUPTI is not looked for
    r = bu.run_exe(profile_exe, "-e", "x.bin", timeout=60, expect=None)
    assert "cupti" not in r.stdout.lower() + r.stderr.lower()
    monkeypatch.delenv("GPT2D_CUPTI")
    if not any((bu.cuda_home() / d).glob("libcupti.so*") for d in ("lib64", "lib", "extras/CUPTI/lib64")):
        return
    if has_gpu():
        return  # a GPU: the trace would run
    r = bu.run_exe(profile_exe, "-e", "x.bin", "--trace", timeout=60, expect=None)
    bu.assert_error_output(r, 4, "no CUDA device available")  # CUPTI found, no GPU


# ------------------------------------------------------------------------------------------------
# gpt2driver profile --tool trace
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_trace(fake_engine, fake_profile, tmp_path, monkeypatch):
    """The fake engine with the stand-in profile executable above; its log of invocations."""
    import shutil as sh

    sh.copy(fake_profile, fake_engine.bin_dir / "profile")
    monkeypatch.setattr(trace_run, "cupti_wheel_dir", lambda: None)
    from click.testing import CliRunner

    from gpt2driver.cli import cli

    return lambda *args: CliRunner().invoke(cli, ["profile", "--tool", "trace", *args])


def test_cli_trace(cli_trace, tmp_path):
    out = tmp_path / "results"
    res = cli_trace("--steps", "4", "-b", "1", "--out", str(out), "--top", "4", "--csv", str(tmp_path / "t.csv"),
                    "--json", str(tmp_path / "t.json"))
    assert res.exit_code == 0, res.output
    assert "optimized B=1 on synthetic (no GPU) (trace)" in res.output
    assert "check kernels: OK" in res.output and "check stamps: OK" in res.output and MMA in res.output
    folder = next(out.iterdir())
    assert folder.name.startswith("trace-optimized-b1-")
    for name in ("trace.json", "kernels.csv", "steps.csv", "stamps.csv", "table.csv", "summary.txt", "meta.json"):
        assert (folder / name).is_file(), name
    cmd = (folder / "trace.cmd.txt").read_text()
    assert "--trace --stamps" in cmd and "--steps 4" in cmd and "--builtin" not in cmd
    rows = json.loads((tmp_path / "t.json").read_text())
    assert len(rows) == 48 and rows[0]["tool"] == "trace" and rows[0]["stage"] == "embedding"
    assert (tmp_path / "t.csv").read_text().startswith("tool,variant,batch,phase,step,idx,name,stage")


@pytest.mark.parametrize("mode, words", [
    ("nocupti", "cannot trace: no usable libcupti"), ("nogpu", "no CUDA device available"),
    ("empty", "holds no kernel of a measured step")])
def test_cli_trace_errors_are_one_line(cli_trace, monkeypatch, tmp_path, mode, words):
    monkeypatch.setenv("FAKE_TRACE_MODE", mode)
    res = cli_trace("--out", str(tmp_path / "r"))
    assert res.exit_code != 0 and words in res.output
    assert len([l for l in res.output.splitlines() if l.strip()]) == 1, res.output


def test_cli_trace_h200_capture_is_one_line(cli_trace, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_TRACE_FILE", str(H200[1]))
    res = cli_trace("--out", str(tmp_path / "r"))
    assert res.exit_code != 0 and "no kernel record of a measured step" in res.output
    assert len([l for l in res.output.splitlines() if l.strip()]) == 1, res.output


def test_cli_trace_without_launch_calls(cli_trace, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_TRACE_FILE", str(KV_NOLAUNCH))
    res = cli_trace("--variant", "kvonly", "--steps", "4", "--out", str(tmp_path / "r"), "--top", "0")
    assert res.exit_code == 0, res.output
    assert "check kernels: OK" in res.output and "check step: OK" in res.output
    assert "placed by the LABEL step's kernel count at a time" in res.output and "156 by" in res.output


def test_cli_trace_usage(cli_trace):
    res = cli_trace("--phase", "prefill")
    assert res.exit_code == 2 and "--tool trace covers decode steps only" in res.output
    res = cli_trace("--metrics", "x")
    assert res.exit_code == 2 and "--metrics applies to --tool ncu only" in res.output


# Real captures of the fixed tracer (H200, 2026-12-02, sixth session, device runs 7 and 8): optimized at B = 1
# (v1 decode kernels, CUDA graph), kvonly at B = 1 (one-by-one launches) and optimized --short-links at B = 1.
def _real(name):
    import gzip

    return T.parse_trace(gzip.decompress((TRACE / f"real_h200_{name}.txt.gz").read_bytes()).decode())


@pytest.mark.parametrize("name, kernels, step_ok, stamps_ok", [
    ("optimized_b1", 62, True, False), ("v2_b1", 61, True, False), ("kvonly_b1", 149, False, None)])
def test_checks_on_real_h200_captures(name, kernels, step_ok, stamps_ok):
    """What that run showed: every step's kernels found and launched, and for the graph replays kernels +
    gaps within 5 % of the untraced step; kvonly's step is 54 % longer traced (the API records' cost on its
    launch-bound steps), and the stage stamps' unions are 95-245 % of the kernels' durations, not within 5 %."""
    tl = _real(name)
    got = {c.name: c for c in T.checks(tl)}
    assert got["kernels"].ok and f"{kernels} seen, {kernels} launched" in got["kernels"].text, got["kernels"]
    assert got["step"].ok == step_ok, got["step"]
    assert ("stamps" in got) == (stamps_ok is not None)
    if stamps_ok is not None:
        assert got["stamps"].ok == stamps_ok, got["stamps"]
    steps = T.step_totals(tl)
    assert len(steps) == 16 and (steps["kernels"] == kernels).all()


# Real captures of the tracer of the seventh session (H200, 2026-12-04, device run 2, decode v1.9): optimized at
# B = 1 with covered_ns in its stamp records, kvonly at B = 1 with API records in the LABEL step only.
def test_checks_on_real_h200_v19_captures():
    """optimized: kernels + gaps within 5 % of the untraced step; its stamps cover 81.5-97.1 % of their kernels
    (the grid's completion after the last stamp), not within 5 %. kvonly: its measured kernels placed by launch
    order (no API record after LABEL), every step like LABEL, and its traced step 74 % longer (CUPTI's cost per
    one-by-one launch), which the step check reports."""
    opt = _real("v19_optimized_b1")
    got = {c.name: c for c in T.checks(opt)}
    assert got["kernels"].ok and got["step"].ok and "+2.4%" in got["step"].text
    assert not got["stamps"].ok and "stages cover 81.5..97.1%" in got["stamps"].text
    assert all(s.covered_ns for s in opt.stamped) and len(opt.stamped) == 49
    # the link budget the decode work reads off it (docs/perf-notes.md v1.9): what each stage adds to the step,
    # and, inside the stamped kernels, each stage's time per block and the completion tail after the last stamp
    links = T.link_table(opt).set_index("stage")
    assert list(links.index) == ["embedding", "qkv", "attn", "attproj", "fc", "fcproj", "logits"]
    assert links.loc["qkv", "per_step"] == 12 and links.loc["logits", "per_step"] == 1
    assert links.loc["fcproj", "link_us"] == pytest.approx(4.42, abs=0.01)
    assert links.loc["attproj", "link_us"] == pytest.approx(1.76, abs=0.01)
    assert links["step_share"].sum() == pytest.approx(1.0)
    budget = T.stage_budget(opt).set_index("label")
    assert list(budget.index) == ["qkv", "attproj", "fc", "fcproj", "logits"]
    assert (budget["launches"] == [12, 12, 12, 12, 1]).all()
    assert budget.loc["fcproj", "mma_us"] == pytest.approx(2.37, abs=0.01)
    assert budget.loc["attproj", "input_us"] == pytest.approx(0.57, abs=0.01)
    assert ((budget["tail_us"] > 0.8) & (budget["tail_us"] < 1.2)).all()
    text = T.summarize(opt, top=2)
    assert "link_us" in text and "tail_us" in text
    kv = _real("v19_kvonly_b1")
    assert kv.info["api_mode"] == "kinds-label" and kv.order == "label-order"
    assert int(kv.info["placed_order"]) == 2682 and int(kv.info["placed_launch"]) == 149
    got = {c.name: c for c in T.checks(kv)}
    assert got["kernels"].ok and "149 seen, 149 launched" in got["kernels"].text
    assert not got["step"].ok and "+74.4%" in got["step"].text

import os
import subprocess
import time
from pathlib import Path

import pytest

from gpt2driver import paths
from gpt2driver.engine import build as build_mod
from gpt2driver.engine.build import build_dir
from gpt2driver.engine.runner import engine_args, run_binary
from gpt2driver.errors import RunError
from gpt2driver.names import PROGRAMS

VALID = '''
print("naive: hello")
print('##GPT2D 1 config program=naive B=1 gen=2 device="Test GPU"')
print("##GPT2D 1 rep index=0 warmup=0 total_ms=2 prefill_ms=1 decode_ms=1 step_ms=1 tokens_per_s=1000")
print("##GPT2D 1 tokens row=0 prompt=50256 ids=11,13")
print("##GPT2D 1 done status=0")
'''


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_dead(pid: int, seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_valid_output(make_script):
    res = run_binary(make_script("naive", VALID), ["-e", "x.bin"], timeout=30)
    assert res.done == 0 and res.config["device"] == "Test GPU" and res.tokens[0] == ([50256], [11, 13])


def test_arguments_are_passed_verbatim(make_script, tmp_path):
    script = make_script("kvonly", '''
        import sys, json
        open(sys.argv[1], "w").write(json.dumps(sys.argv[2:]))
        print("##GPT2D 1 done status=0")
    ''')
    out = tmp_path / "argv.json"
    run_binary(script, [str(out), "a b", "$HOME", "; rm -rf /", '"q"'], timeout=30)
    assert out.read_text() == '["a b", "$HOME", "; rm -rf /", "\\"q\\""]'


def test_crash_by_signal(make_script):
    script = make_script("optimized", '''
        import os, signal, sys
        print("##GPT2D 1 config B=1", flush=True)
        sys.stderr.write("about to crash\\n")
        os.kill(os.getpid(), signal.SIGSEGV)
    ''')
    with pytest.raises(RunError, match="SIGSEGV") as e:
        run_binary(script, [], timeout=30)
    assert e.value.returncode == -11
    assert "about to crash" in e.value.stderr_tail
    assert e.value.result is not None and e.value.result.config["B"] == 1


def test_timeout_kills_the_process_group(make_script, tmp_path):
    pids = tmp_path / "pids"
    script = make_script("kvonly", f'''
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        sys.stderr.write("still working\\n"); sys.stderr.flush()
        time.sleep(60)
    ''')
    t0 = time.monotonic()
    with pytest.raises(RunError, match="timed out after 1 s") as e:
        run_binary(script, [], timeout=1)
    assert time.monotonic() - t0 < 10
    assert "still working" in str(e.value)
    for pid in map(int, pids.read_text().split()):
        assert _wait_dead(pid), f"process {pid} survived the timeout"


def test_garbage_output(make_script):
    script = make_script("naive", '''
        print("##GPT2D 1 config B=1 device=\\"unterminated")
        print("##GPT2D 1 done status=0")
    ''')
    with pytest.raises(RunError, match="unreadable output"):
        run_binary(script, [], timeout=30)


def test_no_done_line_with_exit_0(make_script):
    script = make_script("naive", 'print("just some text")\n')
    with pytest.raises(RunError, match="done line"):
        run_binary(script, [], timeout=30)


def test_exit_code_with_error_record(make_script):
    script = make_script("kvonly", '''
        import sys
        sys.stderr.write("warning: something odd\\n")
        sys.stderr.write("error: /m.bin: bad magic 7 (expected 20240326)\\n")
        print('##GPT2D 1 error msg="/m.bin: bad magic 7 (expected 20240326)"')
        print("##GPT2D 1 done status=3")
        sys.exit(3)
    ''')
    with pytest.raises(RunError) as e:
        run_binary(script, [], timeout=30)
    msg = str(e.value)
    assert e.value.returncode == 3
    assert msg.startswith("kvonly exited with code 3 (bad input file")
    assert "bad magic 7" in msg.splitlines()[0]
    assert "warning: something odd" in msg  # stderr that adds something is kept
    assert msg.count("bad magic") == 1  # the error line of stderr is not repeated


def test_accepted_nonzero_exit(make_script, fixture_text, tmp_path):
    (tmp_path / "out.txt").write_text(fixture_text("validate_fail.txt"))
    script = make_script("validate", f'''
        import sys
        sys.stdout.write(open({str(tmp_path / "out.txt")!r}).read())
        sys.exit(1)
    ''')
    res = run_binary(script, [], timeout=30, ok_codes=(0, 1))
    assert res.done == 1 and res.vsummary[-1]["result"] == "FAIL"
    with pytest.raises(RunError, match="validation failed"):
        run_binary(script, [], timeout=30)


def test_missing_binary(tmp_path):
    with pytest.raises(RunError, match="cannot start .*gpt2driver build"):
        run_binary(tmp_path / "naive", [], timeout=5)


def test_keyboard_interrupt_kills_child(make_script, tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    script = make_script("naive", f'''
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    ''')
    real = subprocess.Popen.communicate

    def interrupted(self, input=None, timeout=None):
        if timeout is None:
            return real(self, input, timeout)
        while not pid_file.exists() or not pid_file.read_text():
            time.sleep(0.02)
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_binary(script, [], timeout=30)
    assert _wait_dead(int(pid_file.read_text()))


def test_build_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("GPT2DRIVER_BUILD_DIR", raising=False)
    assert build_dir(90, "bf16") == paths.repo_root() / "build" / "sm90_bf16"
    assert build_dir(80, "FP32").name == "sm80_fp32"
    monkeypatch.setenv("GPT2DRIVER_BUILD_DIR", str(tmp_path))
    assert build_dir(90, "FP16") == tmp_path / "sm90_fp16"
    assert build_mod.binary_path("kvonly", 90, "bf16") == tmp_path / "sm90_bf16" / "kvonly"
    with pytest.raises(ValueError, match="precision"):
        build_dir(90, "int8")
    with pytest.raises(ValueError, match="program"):
        build_mod.binary_path("turbo", 90, "bf16")


def test_repo_root_holds_the_package():
    assert (paths.repo_root() / "gpt2driver" / "engine" / "runner.py").is_file()


def test_engine_args():
    assert engine_args("m.bin") == ["-e", "m.bin", "--greedy", "-q"]
    args = engine_args("m.bin", tokenizer="t.bin", batch=4, gen=32, greedy=False, temperature=0.8,
                       top_k=40, top_p=0.9, seed=7, prompt_ids=[50256, 11], warmup=2, repeat=3,
                       quiet=False, dump_logits="d.bin", dump_stride=4)
    assert args == ["-e", "m.bin", "-tk", "t.bin", "-b", "4", "-g", "32", "-m", "0",
                    "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9", "-s", "7",
                    "--prompt-ids", "50256,11", "--warmup", "2", "--repeat", "3",
                    "--dump-logits", "d.bin", "--dump-stride", "4"]
    assert engine_args("m.bin", prompt_len=64)[-3:] == ["--prompt-len", "64", "-q"]
    with pytest.raises(ValueError):
        engine_args("m.bin", prompt_ids=[1], prompt_len=4)
    with pytest.raises(ValueError):
        engine_args("m.bin", prompt_ids=[])


# ------------------------------------------------------------------------------------------------
# build.py: make and nvidia-smi replaced by stand-ins on PATH
# ------------------------------------------------------------------------------------------------

FAKE_MAKE = '''
import os, sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
open(os.environ["FAKE_MAKE_LOG"], "a").write(" ".join(sys.argv[1:]) + "\\n")
print("nvcc -O3 ... (fake)")
if os.environ.get("FAKE_MAKE_FAIL"):
    print("csrc/kernels/attn.cu(12): error: identifier x is undefined")
    sys.exit(2)
out = os.path.join(args["BUILD_ROOT"], f"sm{args['GPU_COMPUTE_CAPABILITY']}_{args['PRECISION'].lower()}")
os.makedirs(out, exist_ok=True)
for prog in ("naive", "kvonly", "optimized", "validate", "profile"):
    path = os.path.join(out, prog)
    if not os.path.exists(path):
        open(path, "w").write("binary")
    elif prog in os.environ.get("FAKE_MAKE_TOUCH", "").split(","):
        t = os.stat(path).st_mtime_ns + 10**9
        os.utime(path, ns=(t, t))
'''


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    """A directory first on PATH for stand-in tools."""
    d = tmp_path / "path"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d


def test_make_build(fake_path, tmp_path, monkeypatch):
    from conftest import write_script

    write_script(fake_path / "make", FAKE_MAKE)
    log = tmp_path / "make.log"
    monkeypatch.setenv("FAKE_MAKE_LOG", str(log))
    monkeypatch.setenv("GPT2DRIVER_BUILD_DIR", str(tmp_path / "b"))
    monkeypatch.setenv("CUBLAS_HOME", "/opt/cublas")
    res = build_mod.make_build(90, "bf16", jobs=2, quiet=True)
    assert res.path == tmp_path / "b" / "sm90_bf16" and res.rebuilt == list(PROGRAMS)
    assert "fake" in res.output
    assert log.read_text().split() == ["GPU_COMPUTE_CAPABILITY=90", "PRECISION=BF16", "-j2",
                                       f"BUILD_ROOT={tmp_path / 'b'}"]
    assert build_mod.make_build(90, "bf16", quiet=True).rebuilt == []  # up to date
    monkeypatch.setenv("FAKE_MAKE_TOUCH", "kvonly")
    assert build_mod.build(90, "BF16") == res.path
    assert build_mod.make_build(90, "bf16", quiet=True).rebuilt == ["kvonly"]
    monkeypatch.setenv("FAKE_MAKE_FAIL", "1")
    with pytest.raises(build_mod.BuildError, match=r"(?s)exit code 2.*identifier x is undefined"):
        build_mod.make_build(90, "bf16", quiet=True)


def test_make_missing(monkeypatch, tmp_path):

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build_mod.BuildError, match="make not found"):
        build_mod.make_build(90, "bf16")


@pytest.mark.parametrize("output, rc, expected", [
    ("9.0\n9.0\n", 0, (90, "")),
    ("12.0\n", 0, (120, "")),
    ("8.6\n", 0, (86, "")),
    ("", 0, (None, "nvidia-smi lists no GPU")),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\n", 9,
     (None, "nvidia-smi failed: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")),
])
def test_detect_cc(fake_path, output, rc, expected):
    from conftest import write_script
    from gpt2driver.engine.build import detect_cc

    write_script(fake_path / "nvidia-smi", f"import sys\nsys.stdout.write({output!r})\nsys.exit({rc})\n")
    assert detect_cc() == expected


def test_detect_cc_without_nvidia_smi(monkeypatch, tmp_path):
    from gpt2driver.engine.build import detect_cc

    monkeypatch.setenv("PATH", str(tmp_path))
    cc, reason = detect_cc()
    assert cc is None and "nvidia-smi not found" in reason


def test_find_cublas(monkeypatch, tmp_path):
    import sys
    import types


    (tmp_path / "nvidia" / "cu13" / "include").mkdir(parents=True)
    (tmp_path / "nvidia" / "cu13" / "lib").mkdir()
    fake = types.ModuleType("nvidia")
    fake.__path__ = [str(tmp_path / "nvidia")]
    monkeypatch.setitem(sys.modules, "nvidia", fake)
    monkeypatch.delenv("CUBLAS_HOME", raising=False)
    monkeypatch.delenv("GPT2DRIVER_BUILD_DIR", raising=False)
    assert build_mod.find_cublas() == tmp_path / "nvidia" / "cu13"
    assert build_mod.make_command(90, "fp16", 4)[-1] == f"CUBLAS_HOME={tmp_path / 'nvidia' / 'cu13'}"
    monkeypatch.setenv("CUBLAS_HOME", "/somewhere")
    assert build_mod.find_cublas() is None
    assert not any(a.startswith("CUBLAS_HOME") for a in build_mod.make_command(90, "fp16", 4))
    fake.__path__ = [str(tmp_path / "empty")]
    monkeypatch.delenv("CUBLAS_HOME")
    assert build_mod.find_cublas() is None

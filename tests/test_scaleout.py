"""Scale-out: the multi-GPU scheduler (fake GPUs), shards, gathering and resume (fake Slurm
commands), and one end-to-end sweep through a real single-node Slurm cluster that the test
session starts itself (tests/slurm/start_cluster.sh; root and apt-get needed).

The real-cluster test skips when the cluster cannot be had (not root, no apt-get and no Slurm,
GPT2DRIVER_SKIP_SLURM=1), except under CI=true where it fails with the reason instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from gpt2driver.cli import cli
from gpt2driver.errors import SweepError, SweepInterrupted
from gpt2driver.experiments.configs import parse_config
from gpt2driver.experiments.executors import local, slurm_cmd, slurm_jobs
from gpt2driver.experiments.executors import shard as shard_task
from gpt2driver.experiments.executors import slurm as slurm_exec
from gpt2driver.experiments.points import expand
from gpt2driver.experiments.store import ResultsStore
from gpt2driver.experiments.sweep import run_sweep
from gpt2driver.names import PROGRAMS
from gpt2driver.tables.rows import make_row

SLURM_SCRIPTS = Path(__file__).parent / "slurm"


def small_config(**kw):
    data = {"name": "t", "variants": ["naive", "kvonly", "optimized"], "batch": [1, 4], "gen": [16],
            "warmup": 1, "repeat": 3, "timeout_s": 60}
    data.update(kw)
    return parse_config(data)


# A prefix for the stand-in engine of conftest.py. STUB_RECORD: append "<CUDA_VISIBLE_DEVICES>
# <program> <B> <start> <end>" per run. STUB_SLEEP: seconds to take. STUB_CRASH=<program>:<B>:
# abort (SIGABRT) after a line on stderr. STUB_INTERRUPT=<program>:<B>: send SIGINT to the
# driver (Ctrl-C). STUB_MIXED=1: the device name depends on the GPU (0: Fake A100, 1: Fake H100).
STUB_PREFIX = r'''
import os, signal, sys, time
_t0 = time.time()
_gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "-")
_prog = os.path.basename(sys.argv[0])
_b = sys.argv[sys.argv.index("-b") + 1] if "-b" in sys.argv else "1"
if os.environ.get("STUB_INTERRUPT") == f"{_prog}:{_b}":
    os.kill(os.getppid(), signal.SIGINT)
    time.sleep(60)
time.sleep(float(os.environ.get("STUB_SLEEP", "0")))
if os.environ.get("STUB_CRASH") == f"{_prog}:{_b}":
    sys.stderr.write("stub engine: simulated crash in decode step 3\n")
    sys.stderr.flush()
    os.abort()
DEV = "Fake GPU 80GB"
if os.environ.get("STUB_MIXED"):
    DEV = {"0": "Fake A100", "1": "Fake H100"}.get(_gpu, DEV)
if os.environ.get("STUB_RECORD"):
    with open(os.environ["STUB_RECORD"], "a") as f:
        f.write(f"{_gpu} {_prog} {_b} {_t0} {time.time()}\n")
'''


@pytest.fixture
def stub_engine(fake_engine, monkeypatch, tmp_path):
    """fake_engine whose executables also understand the STUB_* variables above."""
    from conftest import FAKE_ENGINE, write_script

    body = STUB_PREFIX + FAKE_ENGINE.replace('device="Fake GPU 80GB"', 'device="{DEV}"')
    assert 'device="{DEV}"' in body
    for prog in PROGRAMS:
        write_script(fake_engine.bin_dir / prog, body)
    fake_engine.record = tmp_path / "record.txt"
    monkeypatch.setenv("STUB_RECORD", str(fake_engine.record))
    for var in ("STUB_SLEEP", "STUB_CRASH", "STUB_INTERRUPT", "STUB_MIXED"):
        monkeypatch.delenv(var, raising=False)
    return fake_engine


def records(path: Path):
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        gpu, prog, b, t0, t1 = line.split()
        out.append((gpu, prog, int(b), float(t0), float(t1)))
    return out


def engine_processes(bin_dir: Path):
    """(pid, state, command line) of every live process (any parent; zombies left out, they run
    nothing) whose command line names an executable of ``bin_dir``. Linux /proc."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        state = stat[stat.rfind(")") + 2:].split()[0]
        if state != "Z" and str(bin_dir) in cmd:
            found.append((int(d), state, cmd.strip()))
    return found


def jsonl_rows(path: Path):
    return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(local, "list_gpus", lambda: [(0, "Fake GPU 80GB"), (1, "Fake GPU 80GB")])


# ------------------------------------------------------------------------------------------------
# GPU listing
# ------------------------------------------------------------------------------------------------


def test_list_gpus_reads_nvidia_smi(make_script, tmp_path, monkeypatch):
    make_script("nvidia-smi", '''
        print("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1f2e3d4c-0000-1111-2222-333344445555)")
        print("  MIG 1g.10gb     Device  0: (UUID: MIG-aaaa)")
        print("GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-99)")
    ''')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert local.list_gpus() == [(0, "NVIDIA H100 80GB HBM3"), (1, "NVIDIA A100-SXM4-40GB")]
    assert local.parse_gpus("all") == [0, 1]
    assert local.parse_gpus(" 1 ") == [1]
    assert local.parse_gpus("1,0") == [1, 0]
    with pytest.raises(SweepError, match="GPU 2 is not listed.*0 \\(NVIDIA H100"):
        local.parse_gpus("0,2")
    with pytest.raises(SweepError, match="listed twice"):
        local.parse_gpus("0,0")
    with pytest.raises(SweepError, match="expected 'all' or GPU indices"):
        local.parse_gpus("first")


def test_list_gpus_without_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SweepError, match="nvidia-smi not found"):
        local.parse_gpus("all")


# ------------------------------------------------------------------------------------------------
# The multi-GPU scheduler
# ------------------------------------------------------------------------------------------------


def test_gpus_one_point_per_gpu_at_a_time(stub_engine, two_gpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STUB_SLEEP", "0.4")
    out = tmp_path / "res"
    cfg = small_config(batch=[1, 2, 4])
    df = run_sweep(cfg, out, gpus=[0, 1])
    assert stub_engine.builds == [(90, "BF16")]  # prepared once, before the workers
    recs = records(stub_engine.record)
    assert len(recs) == 9
    assert {r[0] for r in recs} == {"0", "1"}  # both GPUs worked
    for gpu in ("0", "1"):
        spans = sorted((r[3], r[4]) for r in recs if r[0] == gpu)
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert s1 >= e0, f"two points overlapped on GPU {gpu}"
    # ...and the two GPUs did work at the same time.
    a = [(r[3], r[4]) for r in recs if r[0] == "0"]
    b = [(r[3], r[4]) for r in recs if r[0] == "1"]
    assert any(s0 < e1 and s1 < e0 for s0, e0 in a for s1, e1 in b)
    # Every row: ok, its GPU name and index, in the resumable store (one line per point).
    rows = jsonl_rows(out / "results.jsonl")
    assert len(rows) == 9 and {r["status"] for r in rows} == {"ok"}
    assert {r["gpu_index"] for r in rows} == {0, 1} and {r["gpu"] for r in rows} == {"Fake GPU 80GB"}
    by_id = {r["id"]: r for r in rows}
    for r in recs:  # the recorded CUDA_VISIBLE_DEVICES is the row's gpu_index
        pid = [p["id"] for p in expand(cfg) if p["variant"] == r[1] and p["batch"] == r[2]][0]
        assert str(by_id[pid]["gpu_index"]) == r[0]
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 9 and "gpu_index" in csv.columns
    assert len(df) == 9 and list(df["variant"][:3]) == ["naive", "kvonly", "optimized"]
    err = capsys.readouterr().err
    assert "9 point(s) on 2 GPU(s)" in err and " GPU 1: " in err and " GPU 0: " in err
    # Rerun: nothing runs again.
    run_sweep(cfg, out, gpus=[0, 1])
    assert len(records(stub_engine.record)) == 9
    assert capsys.readouterr().err.count("done earlier, skipped") == 9


def test_gpus_failed_point_then_resume(stub_engine, two_gpus, tmp_path, monkeypatch):
    out = tmp_path / "res"
    monkeypatch.setenv("FAKE_FAIL", "kvonly:4")
    df = run_sweep(small_config(), out, gpus=[0, 1])
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and "99999 MiB" in failed.iloc[0]["error"]
    monkeypatch.delenv("FAKE_FAIL")
    df = run_sweep(small_config(), out, gpus=[1])
    assert set(df["status"]) == {"ok"} and len(records(stub_engine.record)) == 7
    assert records(stub_engine.record)[-1][:3] == ("1", "kvonly", 4)


def test_gpus_mixed_gpu_types_grouped(stub_engine, two_gpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STUB_MIXED", "1")
    df = run_sweep(small_config(), tmp_path / "res", gpus=[0, 1])
    assert set(df["gpu"]) == {"Fake A100", "Fake H100"}
    assert list(df["gpu"]) == sorted(df["gpu"])  # grouped by GPU name
    for _, r in df.iterrows():  # a speedup only ever compares timings of one kind of GPU
        base = df[(df["variant"] == "naive") & (df["batch"] == r["batch"])].iloc[0]
        if base["gpu"] != r["gpu"]:
            assert pd.isna(r["speedup_vs_naive"])
        else:
            assert r["speedup_vs_naive"] > 0
    table = capsys.readouterr().out
    assert "| gpu" in table and "Fake A100" in table and "Fake H100" in table


def test_gpus_ctrl_c_stops_every_child(stub_engine, two_gpus, tmp_path, monkeypatch):
    out = tmp_path / "res"
    # One finished point first, so that there is something to keep.
    run_sweep(small_config(batch=[1], variants=["naive"]), out, gpus=[0])
    monkeypatch.setenv("STUB_SLEEP", "30")
    monkeypatch.setenv("STUB_INTERRUPT", "kvonly:1")
    t0 = time.monotonic()
    with pytest.raises(SweepInterrupted, match="0 point\\(s\\) finished in this run"):
        run_sweep(small_config(batch=[1]), out, gpus=[0, 1])
    assert time.monotonic() - t0 < 20  # the sleeping child on the other GPU was killed
    # The sweep left no executable of this test's engine running, under any parent. (Found by command
    # line: a count of this process's children also caught processes of other tests and code.)
    deadline = time.monotonic() + 5
    while engine_processes(stub_engine.bin_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine_processes(stub_engine.bin_dir) == []
    assert len(records(stub_engine.record)) == 1  # nothing but the first point finished
    assert [r["variant"] for r in jsonl_rows(out / "results.jsonl")] == ["naive"]
    monkeypatch.delenv("STUB_INTERRUPT")
    monkeypatch.setenv("STUB_SLEEP", "0")
    df = run_sweep(small_config(batch=[1]), out, gpus=[0, 1])
    assert set(df["status"]) == {"ok"} and len(records(stub_engine.record)) == 3


def test_store_appends_from_threads_are_whole_lines(tmp_path):
    import threading

    store = ResultsStore(tmp_path)

    def add(k):
        for i in range(10):
            store.append({"id": f"{k}-{i}", "variant": "naive", "status": "ok", "x": "y" * 5000})

    threads = [threading.Thread(target=add, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 40 and all(json.loads(l)["x"] == "y" * 5000 for l in lines)
    assert len(pd.read_csv(tmp_path / "results.csv")) == 40


def test_cli_sweep_gpus_and_option_checks(stub_engine, two_gpus, tmp_path):
    runner = CliRunner()
    cfg = tmp_path / "mini.yaml"
    cfg.write_text("name: mini\nvariants: [naive, optimized]\nbatch: [1, 2]\ngen: [4]\nrepeat: 1\n")
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--out", str(tmp_path / "r"),
                              "--gpus", "all"])
    assert res.exit_code == 0, res.output
    assert {r[0] for r in records(stub_engine.record)} <= {"0", "1"} and len(records(stub_engine.record)) == 4
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--gpus", "3"])
    assert res.exit_code == 1 and "GPU 3 is not listed" in res.output
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--partition", "gpu"])
    assert res.exit_code == 2 and "--partition needs --executor slurm" in res.output
    res = runner.invoke(cli, ["sweep", "--config", str(cfg), "--executor", "slurm", "--gpus", "0"])
    assert res.exit_code == 2 and "--gpus is for the local executor" in res.output


# ------------------------------------------------------------------------------------------------
# Shards, sbatch options, gathering
# ------------------------------------------------------------------------------------------------


def test_make_shards_keeps_groups_together():
    points = expand(small_config(batch=[1, 2, 4, 8, 16]))
    shards = slurm_jobs.make_shards(points)
    assert len(shards) == 5 and all(len(s) == 3 for s in shards)
    assert all(len({p["batch"] for p in s}) == 1 for s in shards)
    assert [p["id"] for s in shards for p in s] == [p["id"] for p in points]
    two = slurm_jobs.make_shards(points, max_tasks=2)
    assert [len(s) for s in two] == [9, 6]
    assert [p["id"] for s in two for p in s] == [p["id"] for p in points]
    assert slurm_jobs.make_shards(points, max_tasks=50) == shards
    # Only some variants left of a group: the group shrinks, it is not merged with another.
    left = [p for p in points if not (p["batch"] == 1 and p["variant"] != "kvonly")]
    assert [len(s) for s in slurm_jobs.make_shards(left)] == [1, 3, 3, 3, 3]


def test_sbatch_args():
    opts = slurm_cmd.SlurmOptions(partition="gpu", time="00:30:00", max_running=2,
                                 extra=("account=abc", "--exclusive", "constraint=h100|a100"))
    args = opts.sbatch_args(4, "/r/logs/%A_%a.out", "gpt2driver-x", "/r")
    assert args[:2] == ["--array=0-3%2", "--output=/r/logs/%A_%a.out"]
    assert {"--partition=gpu", "--gres=gpu:1", "--time=00:30:00", "--account=abc", "--exclusive",
            "--constraint=h100|a100", "--chdir=/r"} <= set(args)
    assert not any(a.startswith("--gres") for a in
                   slurm_cmd.SlurmOptions(gres="none").sbatch_args(1, "l", "j", "/"))
    with pytest.raises(SweepError, match="set by gpt2driver"):
        slurm_cmd.SlurmOptions(extra=("array=0-9",)).sbatch_args(1, "l", "j", "/")
    with pytest.raises(SweepError, match="KEY=VALUE"):
        slurm_cmd.SlurmOptions(extra=("=x",)).sbatch_args(1, "l", "j", "/")


def test_shard_outputs_read_complete_lines_once(tmp_path):
    outs = slurm_jobs.ShardOutputs(tmp_path, {"0": ["a", "b"], "1": ["c"]})
    assert outs.poll() == []
    with open(tmp_path / "0.jsonl", "w") as f:
        f.write(json.dumps({"id": "a", "status": "ok"}) + "\n" + '{"id": "b", "sta')
    assert [(t, r["id"]) for t, r in outs.poll()] == [("0", "a")]
    assert outs.poll() == []
    with open(tmp_path / "0.jsonl", "a") as f:
        f.write('tus": "failed"}\n' + json.dumps({"id": "zzz", "status": "ok"}) + "\n")
    assert [(t, r["id"], r["status"]) for t, r in outs.poll()] == [("0", "b", "failed")]
    assert outs.finished_ids() == {"a", "b"}


def test_run_shard_resumes_and_reports(stub_engine, tmp_path, monkeypatch, capsys):
    points = expand(small_config(batch=[4]))
    shard = tmp_path / "shard.json"
    shard.write_text(json.dumps([slurm_jobs.shard_entry(p, stub_engine.bin_dir, stub_engine.model, 90, 60)
                                 for p in points]))
    out = tmp_path / "out" / "0.jsonl"
    monkeypatch.setenv("STUB_CRASH", "kvonly:4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr(shard_task.signal, "signal", lambda *a: None)  # keep pytest's SIGTERM
    assert shard_task.run_shard(shard, out) == 1
    rows = jsonl_rows(out)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"].startswith("kvonly was killed by SIGABRT") and rows[0]["gpu_index"] == 3
    assert "simulated crash in decode step 3" in capsys.readouterr().out  # the full error, for the log
    monkeypatch.delenv("STUB_CRASH")
    assert shard_task.run_shard(shard, out) == 0
    assert len(records(stub_engine.record)) == 3  # only the failed point ran again
    assert [r["status"] for r in jsonl_rows(out)] == ["ok", "failed", "ok", "ok"]


def test_final_states_without_accounting(make_script, tmp_path, monkeypatch):
    make_script("sacct", 'import sys\nprint("Slurm accounting storage is disabled", file=sys.stderr)\nsys.exit(1)\n')
    make_script("scontrol", '''
        print("JobId=8 ArrayJobId=7 ArrayTaskId=1 JobName=x JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0")
        print("JobId=7 ArrayJobId=7 ArrayTaskId=0 JobName=x JobState=COMPLETED Reason=None ExitCode=0:0")
        print("JobId=9 ArrayJobId=7 ArrayTaskId=2-3 JobName=x JobState=PENDING Reason=Resources ExitCode=0:0")
    ''')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert slurm_cmd.final_states("7") == {"0": ("COMPLETED", "0:0"), "1": ("FAILED", "1:0"),
                                          "2": ("PENDING", "0:0"), "3": ("PENDING", "0:0")}
    make_script("sacct", 'print("7_0|COMPLETED|0:0")\nprint("7_1|CANCELLED by 0|0:15")\n')
    assert slurm_cmd.final_states("7") == {"0": ("COMPLETED", "0:0"), "1": ("CANCELLED", "0:15")}


# ------------------------------------------------------------------------------------------------
# The Slurm executor against stand-in Slurm commands (runs the tasks at once, in order)
# ------------------------------------------------------------------------------------------------

FAKE_SBATCH = r'''
import os, subprocess, sys
state = os.environ["FAKE_SLURM_DIR"]
args = sys.argv[1:]
opt = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--") and "=" in a}
script = args[-1]
n = int(opt["--array"].split("%")[0].split("-")[1]) + 1
counter = os.path.join(state, "jobs")
job = (int(open(counter).read()) if os.path.exists(counter) else 100) + 1
open(counter, "w").write(str(job))
with open(os.path.join(state, "sbatch.log"), "a") as f:
    f.write(" ".join(args) + "\n")
for t in range(n):
    log = opt["--output"].replace("%A", str(job)).replace("%a", str(t))
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": str(job), "SLURM_ARRAY_TASK_ID": str(t),
           "SLURM_JOB_ID": str(job + t)}
    with open(log, "w") as out:
        rc = subprocess.call(["bash", script], stdout=out, stderr=subprocess.STDOUT, env=env,
                             cwd=opt["--chdir"])
    with open(os.path.join(state, "states"), "a") as f:
        f.write(f"{job}_{t}|{'COMPLETED' if rc == 0 else 'FAILED'}|{rc}:0\n")
print(job)
'''

FAKE_SQUEUE = r'''
import os, sys
state = os.environ["FAKE_SLURM_DIR"]
polls = os.path.join(state, "running_polls")  # "<job> <n>": the job shows as running n more times
if os.path.exists(polls):
    job, n = open(polls).read().split()
    if job == sys.argv[sys.argv.index("-j") + 1] and int(n) > 0:
        open(polls, "w").write(f"{job} {int(n) - 1}")
        print(f"{job}_0|RUNNING|None")
'''

FAKE_SACCT = r'''
import os, sys
job = sys.argv[sys.argv.index("-j") + 1]
path = os.path.join(os.environ["FAKE_SLURM_DIR"], "states")
for line in (open(path).read().splitlines() if os.path.exists(path) else []):
    if line.startswith(job + "_"):
        print(line)
'''


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    from conftest import write_script

    bin_dir, state = tmp_path / "slurm-bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    state.mkdir()
    write_script(bin_dir / "sbatch", FAKE_SBATCH)
    write_script(bin_dir / "squeue", FAKE_SQUEUE)
    write_script(bin_dir / "sacct", FAKE_SACCT)
    write_script(bin_dir / "scancel", "")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    return state


def slurm_sweep(out, poll_s=0.2, **kw):
    opts = slurm_cmd.SlurmOptions(gres="none", poll_s=poll_s, settle_s=2, max_wait_s=60, **kw)
    return run_sweep(small_config(), out, executor="slurm", slurm=opts)


def submissions(out: Path):
    return sorted(d for d in (out / "slurm").iterdir() if d.is_dir()) if (out / "slurm").exists() else []


def shard_ids(sub: Path):
    return sorted(p["id"] for f in (sub / "shards").glob("*.json") for p in json.loads(f.read_text()))


def check_slurm_sweep(out: Path, engine, monkeypatch, capsys, poll_s):
    """A sweep through the Slurm executor: one crash reported with its log tail, the rerun submits
    only the failed point, the third run submits nothing."""
    monkeypatch.setenv("STUB_CRASH", "kvonly:4")
    df = slurm_sweep(out, poll_s=poll_s)
    err = capsys.readouterr().err
    assert len(df) == 6 and (df["status"] == "ok").sum() == 5
    bad = df[df["status"] == "failed"].iloc[0]
    assert (bad["variant"], bad["batch"]) == ("kvonly", 4)
    assert "kvonly was killed by SIGABRT" in bad["error"]
    subs = submissions(out)
    assert len(subs) == 1 and len(list((subs[0] / "shards").glob("*.json"))) == 2  # one task per B
    job = err.split("submitted slurm job ")[1].split(":")[0]
    assert f"slurm task {job}_1 FAILED" in err  # B=4 is the second shard
    assert "1 of 3 point(s) failed" in err
    assert "| stub engine: simulated crash in decode step 3" in err  # the log's tail
    assert "slurm job" in err and "5/6 point(s) ok" in err
    rows = jsonl_rows(out / "results.jsonl")
    assert len(rows) == 6 and all(r.get("slurm_job", "").startswith(job + "_") for r in rows)
    assert not (out / "slurm" / "current.json").exists()
    assert len(pd.read_csv(out / "results.csv")) == 6

    # Rerun: only the failed point is submitted.
    monkeypatch.delenv("STUB_CRASH")
    calls_before = len(engine.calls())
    df = slurm_sweep(out, poll_s=poll_s)
    assert set(df["status"]) == {"ok"} and len(df) == 6
    subs = submissions(out)
    assert len(subs) == 2 and shard_ids(subs[1]) == [bad["id"]]
    assert len(engine.calls()) == calls_before + 1
    assert "6 point(s) done" not in capsys.readouterr().err

    # Everything done: nothing is submitted at all.
    df = slurm_sweep(out, poll_s=poll_s)
    assert len(submissions(out)) == 2 and len(engine.calls()) == calls_before + 1
    assert "nothing to submit" in capsys.readouterr().err


def test_slurm_executor_with_stand_in_commands(stub_engine, fake_slurm, tmp_path, monkeypatch, capsys):
    check_slurm_sweep(tmp_path / "res", stub_engine, monkeypatch, capsys, poll_s=0.1)
    sbatch = (fake_slurm / "sbatch.log").read_text().splitlines()
    assert len(sbatch) == 2 and "--array=0-1" in sbatch[0] and "--array=0-0" in sbatch[1]
    assert not any("--gres" in a for a in sbatch)


def test_slurm_reattaches_to_a_job_still_running(stub_engine, fake_slurm, tmp_path, monkeypatch, capsys):
    """A driver that died while its job ran: the next run waits for that job, gathers its
    results, and submits none of its points again."""
    out = tmp_path / "res"
    points = expand(small_config())
    sub = out / "slurm" / "earlier"
    (sub / "shards").mkdir(parents=True)
    (sub / "logs").mkdir()
    shards = slurm_jobs.make_shards(points)
    tasks = {str(t): [p["id"] for p in s] for t, s in enumerate(shards)}
    (out / "slurm" / "current.json").write_text(json.dumps({"job_id": "77", "dir": str(sub), "tasks": tasks}))
    # Task 0 finished its three points; task 1 wrote one line and then its node died.
    for t, shard in enumerate(shards):
        (sub / "shards" / f"{t}.json").write_text(json.dumps(shard))
        with open(sub / "shards" / f"{t}.jsonl", "a") as f:
            for p in shard[:3 if t == 0 else 1]:
                f.write(json.dumps({**make_row(p), "gpu": "Fake GPU 80GB"}) + "\n")
    (sub / "logs" / "77_1.out").write_text("gpt2driver shard ...\nslurmstepd: error: *** NODE FAILURE ***\n")
    (fake_slurm / "running_polls").write_text("77 2")
    (fake_slurm / "states").write_text("77_0|COMPLETED|0:0\n77_1|NODE_FAIL|0:0\n")
    df = slurm_sweep(out, poll_s=0.1)
    err = capsys.readouterr().err
    assert "still in the queue: waiting for it" in err
    assert "slurm task 77_1 NODE_FAIL" in err and "2 without a result" in err and "NODE FAILURE" in err
    assert "nothing more to submit" in err
    assert not (fake_slurm / "sbatch.log").exists()  # none of its points was submitted again
    assert (df["status"] == "ok").sum() == 4
    lost = df[df["status"] == "failed"]
    assert len(lost) == 2 and all("no result from slurm task 77_1 (NODE_FAIL" in e for e in lost["error"])
    assert not (out / "slurm" / "current.json").exists()
    # The next run submits just the two lost points.
    df = slurm_sweep(out, poll_s=0.1)
    assert set(df["status"]) == {"ok"}
    new = [d for d in submissions(out) if d.name != "earlier"]
    assert len(new) == 1 and shard_ids(new[0]) == sorted(p["id"] for p in points[4:])


def test_slurm_needs_sbatch(stub_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_exec.shutil, "which", lambda name: None)
    with pytest.raises(SweepError, match="sbatch not found"):
        slurm_sweep(tmp_path / "res")


# ------------------------------------------------------------------------------------------------
# A real single-node Slurm cluster
# ------------------------------------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _cannot_have_slurm():
    """Why the test cluster cannot be started here, or None."""
    if os.environ.get("GPT2DRIVER_SKIP_SLURM") == "1":
        return "GPT2DRIVER_SKIP_SLURM=1"
    if not sys.platform.startswith("linux"):
        return "the test Slurm cluster needs Linux"
    if os.geteuid() != 0:
        return "the test Slurm cluster needs root (apt-get install, munged, slurmd)"
    if not (shutil.which("sbatch") and shutil.which("slurmctld")) and not shutil.which("apt-get"):
        return "Slurm is not installed and apt-get is not available to install it"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the single-node cluster (tests/slurm/start_cluster.sh) once per session; stopped at
    the end. Skips when it cannot be had, except under CI=true, where that is a failure."""
    reason = _cannot_have_slurm()
    if reason:
        if _in_ci() and reason != "GPT2DRIVER_SKIP_SLURM=1":
            pytest.fail(f"CI=true but the Slurm test cluster cannot run: {reason}")
        pytest.skip(reason)
    stop = [str(SLURM_SCRIPTS / "stop_cluster.sh")]
    t0 = time.monotonic()
    try:
        proc = subprocess.run([str(SLURM_SCRIPTS / "start_cluster.sh")], capture_output=True,
                              text=True, timeout=240)
        problem = None if proc.returncode == 0 else (
            f"start_cluster.sh exited with {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    except subprocess.TimeoutExpired as e:
        problem = f"start_cluster.sh did not finish in 240 s: {e}"
    if problem:
        subprocess.run(stop, capture_output=True, timeout=120)
        if _in_ci():
            pytest.fail(f"CI=true but the Slurm test cluster did not start: {problem}")
        pytest.skip(f"the Slurm test cluster did not start: {problem}")
    conf = subprocess.run([str(SLURM_SCRIPTS / "start_cluster.sh"), "--env"], capture_output=True,
                          text=True).stdout.strip().split("=", 1)[1]
    try:
        yield {"SLURM_CONF": conf, "start_s": time.monotonic() - t0}
    finally:
        if os.environ.get("GPT2DRIVER_SLURM_KEEP") != "1":
            subprocess.run(stop, capture_output=True, timeout=120)


@pytest.mark.slow
def test_slurm_cluster_end_to_end(slurm_cluster, stub_engine, tmp_path, monkeypatch, capsys):
    """Jobs really run through sbatch on the test cluster (no GPU: --gres none)."""
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    out = tmp_path / "res"
    check_slurm_sweep(out, stub_engine, monkeypatch, capsys, poll_s=0.5)
    log = next(submissions(out)[0].glob("logs/*_1.out")).read_text()
    assert "gpt2driver shard" in log and "FAILED: kvonly was killed by SIGABRT" in log
    assert {r["host"] for r in jsonl_rows(out / "results.jsonl")} == {os.uname().nodename}

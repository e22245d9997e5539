import json

import pandas as pd
import pytest

from gpt2driver.engine import build as build_mod
from gpt2driver.errors import SweepError, SweepInterrupted
from gpt2driver.experiments import pointrunner, summary
from gpt2driver.experiments.configs import parse_config
from gpt2driver.experiments.store import ResultsStore
from gpt2driver.experiments.sweep import run_sweep
from gpt2driver.files import models
from gpt2driver.tables import views


def small_config(**kw):
    data = {"name": "t", "variants": ["naive", "kvonly", "optimized"], "batch": [1, 4], "gen": [16],
            "warmup": 1, "repeat": 3, "timeout_s": 30}
    data.update(kw)
    return parse_config(data)


def jsonl_rows(out):
    return [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]


def test_sweep_writes_results(fake_engine, tmp_path, capsys):
    out = tmp_path / "res"
    df = run_sweep(small_config(), out)
    assert len(fake_engine.calls()) == 6
    assert fake_engine.builds == [(90, "BF16")]  # one build per precision
    call = fake_engine.calls()[0].split()
    assert call[0] == "naive" and call[call.index("--repeat") + 1] == "3" and "-q" in call
    assert (out / "results.csv").exists() and (out / "results.json").exists()
    assert not list(out.glob(".*tmp"))
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 6 and set(csv["status"]) == {"ok"}
    assert set(csv["gpu"]) == {"Fake GPU 80GB"}
    data = json.loads((out / "results.json").read_text())
    assert len(data) == 6 and data[0]["variant"] == "naive"
    row = df[(df["variant"] == "optimized") & (df["batch"] == 4)].iloc[0]
    assert row["speedup_vs_naive"] == pytest.approx(10.0, rel=1e-3)
    assert row["tokens_per_s_min"] <= row["tokens_per_s_median"] <= row["tokens_per_s_max"]
    assert row["mem_kv_bytes"] == 4096 and row["prefill_ms"] == 1
    captured = capsys.readouterr()
    assert "[6/6] optimized B=4 gen=16 ... " in captured.err and "tok/s" in captured.err
    assert "vs naive" in captured.out and "10.00x" in captured.out
    assert "matplotlib" in captured.out or "plot:" in captured.out


def test_resume_skips_finished_points(fake_engine, tmp_path, capsys):
    out = tmp_path / "res"
    run_sweep(small_config(), out)
    before = (out / "results.jsonl").read_text()
    run_sweep(small_config(), out)
    assert len(fake_engine.calls()) == 6  # nothing ran again
    assert (out / "results.jsonl").read_text() == before
    assert capsys.readouterr().err.count("done earlier, skipped") == 6
    # A new point in the same results dir runs alone.
    run_sweep(small_config(batch=[1, 4, 8]), out)
    assert len(fake_engine.calls()) == 9


def test_failed_point_is_recorded_and_sweep_goes_on(fake_engine, tmp_path, monkeypatch, capsys):
    out = tmp_path / "res"
    monkeypatch.setenv("FAKE_FAIL", "kvonly:4")
    df = run_sweep(small_config(), out)
    assert len(fake_engine.calls()) == 6
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and failed.iloc[0]["variant"] == "kvonly" and failed.iloc[0]["batch"] == 4
    assert "exited with code 4" in failed.iloc[0]["error"] and "99999 MiB" in failed.iloc[0]["error"]
    assert pd.isna(failed.iloc[0]["tokens_per_s_median"])
    assert "FAILED" in capsys.readouterr().err
    # Rerun: only the failed point runs again, and now succeeds.
    monkeypatch.delenv("FAKE_FAIL")
    df = run_sweep(small_config(), out)
    assert len(fake_engine.calls()) == 7
    assert set(df["status"]) == {"ok"} and len(df) == 6
    assert len(jsonl_rows(out)) == 7  # append-only: the failure stays in the record


def test_build_failure_marks_points_failed(fake_engine, tmp_path, monkeypatch):
    def broken(cc, precision, jobs=None, quiet=False):
        raise build_mod.BuildError("make failed (exit code 2): nvcc: not found")

    monkeypatch.setattr(build_mod, "make_build", broken)
    df = run_sweep(small_config(batch=[1]), tmp_path / "res")
    assert set(df["status"]) == {"failed"}
    assert all(e.startswith("build failed: make failed") for e in df["error"])
    assert fake_engine.calls() == []


def test_ctrl_c_keeps_finished_points(fake_engine, tmp_path, monkeypatch):
    real = pointrunner.run_binary
    calls = []

    def interrupt_second(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(pointrunner, "run_binary", interrupt_second)
    out = tmp_path / "res"
    with pytest.raises(SweepInterrupted, match="1 point"):
        run_sweep(small_config(), out)
    assert len(jsonl_rows(out)) == 1
    monkeypatch.setattr(pointrunner, "run_binary", real)
    run_sweep(small_config(), out)
    assert len(jsonl_rows(out)) == 6


def test_dry_run_runs_nothing(fake_engine, tmp_path, capsys):
    run_sweep(small_config(), tmp_path / "res", dry_run=True)
    assert fake_engine.calls() == [] and fake_engine.builds == []
    out = capsys.readouterr().out
    assert "[1/6] naive B=1 gen=16" in out and "6 points, 0 already done" in out


def test_no_gpu(fake_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(build_mod, "detect_cc", lambda: (None, "nvidia-smi not found"))
    with pytest.raises(SweepError, match="nvidia-smi not found.*--cc"):
        run_sweep(small_config(), tmp_path / "res")
    run_sweep(small_config(batch=[1]), tmp_path / "res", cc=80)
    assert fake_engine.builds == [(80, "BF16")]


def test_labels_show_what_varies(fake_engine, tmp_path, capsys):
    run_sweep(small_config(precision=["FP32", "BF16"], batch=[1], variants=["kvonly"]),
              tmp_path / "res")
    err = capsys.readouterr().err
    assert "[1/2] kvonly FP32 B=1 gen=16" in err and "[2/2] kvonly BF16 B=1" in err


def test_store_ignores_a_torn_line(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({"id": "a", "variant": "naive", "status": "ok", "tokens_per_s_median": 10.0})
    with open(store.jsonl, "a") as f:
        f.write('{"id": "b", "stat')
    assert [r["id"] for r in store.rows()] == ["a"] and store.ok_ids() == {"a"}


def test_speedup_needs_a_matching_naive():
    rows = [
        {"id": "1", "variant": "naive", "batch": 1, "gen": 8, "status": "ok", "tokens_per_s_median": 100.0},
        {"id": "2", "variant": "kvonly", "batch": 1, "gen": 8, "status": "ok", "tokens_per_s_median": 450.0},
        {"id": "3", "variant": "kvonly", "batch": 2, "gen": 8, "status": "ok", "tokens_per_s_median": 800.0},
    ]
    df = summary.frame(rows)
    assert df["speedup_vs_naive"].tolist()[:2] == [1.0, 4.5] and pd.isna(df["speedup_vs_naive"][2])
    table = views.sweep_table(df)
    assert "4.50x" in table and "kvonly" in table


def test_resolve_model_presets(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(models, "model_dir", lambda: tmp_path)
    monkeypatch.setattr(models, "ensure_default_model", lambda precision: tmp_path / "default.bin")

    def fake_make(path, cfg, dtype="bf16", seed=0):
        calls.append((path.name, cfg.num_layers, dtype))
        return path

    monkeypatch.setattr(models, "make_random_checkpoint", fake_make)
    assert models.resolve_model("gpt2", "BF16") == tmp_path / "default.bin"
    path = models.resolve_model("gpt2-medium", "FP32")
    assert path == tmp_path / "gpt2-medium_random_fp32.bin"
    assert calls == [("gpt2-medium_random_fp32.bin", 24, "fp32")]


def test_batch_curve_preset(fake_engine, tmp_path, capsys):
    """configs/batch_curve.yaml: B = 1 ... 256 with naive left out from 64 on; with a copy
    bandwidth the rows get their % of floor, the table and the plot show it."""
    import dataclasses

    from gpt2driver.experiments.configs import config_path, load_config

    cfg = load_config(config_path("batch_curve"))
    assert cfg.batch == [1, 2, 4, 8, 16, 32, 64, 128, 256] and cfg.copy_gbps == "measure"
    cfg = dataclasses.replace(cfg, gen=[4], repeat=1, batch=[1, 2, 64], copy_gbps=3000.0)
    df = run_sweep(cfg, tmp_path / "res")
    assert [(r.variant, r.batch) for r in df.itertuples()] == [
        ("naive", 1), ("kvonly", 1), ("optimized", 1), ("naive", 2), ("kvonly", 2),
        ("optimized", 2), ("kvonly", 64), ("optimized", 64)]
    assert df["floor_pct"].notna().all() and df["bytes_per_step"].notna().all()
    out = capsys.readouterr().out
    assert "% of floor" in out and "tokens/s against B:" in out
    png = tmp_path / "res" / "tokens_per_s.png"
    assert png.exists() == ("matplotlib is not installed" not in out)


def test_copy_bandwidth_to_measure_without_torch(fake_engine, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    df = run_sweep(small_config(batch=[1], copy_gbps="measure"), tmp_path / "res")
    assert df["floor_pct"].isna().all()
    assert "copy bandwidth not measured (torch is not installed" in capsys.readouterr().err

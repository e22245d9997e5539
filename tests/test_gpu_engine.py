"""The real executables on a GPU, teacher-forced against the float64 PyTorch reference.

Every dumped step of every row is compared with tests/reference.py run on that row's own token
sequence (prompt + the tokens the engine generated), so a wrong token never cascades: each step
checks the logits the engine computed from exactly the tokens it was fed.

    rel_err = ||engine - reference|| / ||reference||   over the V logits of one (step, row)

Limits: FP32 1e-4 (the engine uses no TF32), FP16 1e-2, BF16 2e-2; the reference's weights are
rounded to the build's precision first, as the engine's loader does.

Needs an NVIDIA GPU, nvcc, cuBLAS and torch; skipped otherwise. The binaries are built with the
Makefile for the detected compute capability into $GPT2DRIVER_TEST_BUILD_ROOT (default: the
repository's build/, so a second run rebuilds nothing); cuBLAS from $GPT2DRIVER_CUBLAS_HOME,
default /usr/local/cuda. Random checkpoints are written into a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import buildutil as bu

pytestmark = pytest.mark.gpu

if bu.torch_skip_reason():  # a GPU without torch: say what to install (issue 15)
    pytest.skip(bu.torch_skip_reason(), allow_module_level=True)
torch = pytest.importorskip("torch")

import reference as ref  # noqa: E402  (needs torch)
from gpt2driver.files import checkpoint as ck  # noqa: E402
from gpt2driver.files.checkpoint import ModelConfig  # noqa: E402

PRECISIONS = ("FP32", "FP16", "BF16")
REL_TOL = {"FP32": 1e-4, "FP16": 1e-2, "BF16": 2e-2}
VARIANTS = ("naive", "kvonly", "optimized")
EOT = 50256
RUN_TIMEOUT = 600

# (B, prompt length, gen, dump stride). B=1/P=300/gen=724 fills the whole 1024-token context; its
# stride of 5 keeps the dump small and leaves the last step (723) off the stride, so the dump's
# "last step always" rule is exercised. B=16 stays short: naive recomputes everything each step.
# B = 32, 64 and 256 take the large-batch decode (the wide attention kernel that also stores the new
# key and value, the multi-block greedy argmax), past its position 32 (two key splits per head) at
# B = 64; B = 2 with a 1000-token prompt prefills one long chunk and decodes at the end of the context.
CASES = [
    (1, 1, 64, 1), (1, 7, 64, 1), (1, 300, 724, 5),
    (3, 1, 48, 1), (3, 7, 48, 1), (3, 300, 40, 1),
    (16, 1, 12, 1), (16, 7, 12, 1), (16, 300, 6, 1),
    (32, 7, 8, 1), (64, 30, 40, 3), (256, 5, 3, 1), (2, 1000, 8, 1),
]
CASE_IDS = [f"B{b}-P{p}-gen{g}" for b, p, g, _ in CASES]


# ------------------------------------------------------------------------------------------------
# Session fixtures: GPU, binaries, checkpoints, reference weights
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gpu_cc():
    """The compute capability of GPU 0 as an int (90 for an H100); skip without a usable GPU."""
    try:
        lst = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
        q = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"nvidia-smi unavailable: {e}")
    if lst.returncode != 0 or q.returncode != 0 or not q.stdout.strip():
        pytest.skip("nvidia-smi -L failed: no NVIDIA GPU")
    if not torch.cuda.is_available():
        pytest.skip("torch.cuda is not available (the reference runs on the GPU)")
    major, _, minor = q.stdout.strip().splitlines()[0].strip().partition(".")
    return int(major) * 10 + int(minor or 0)


def _cublas_home():
    env = os.environ.get("GPT2DRIVER_CUBLAS_HOME")
    if env:
        return Path(env)
    default = Path("/usr/local/cuda")
    if bu.has_cublas(default):
        return default
    return bu.find_cublas() or default


@pytest.fixture(scope="session")
def bins(gpu_cc):
    """precision -> directory with the five executables built for this GPU."""
    if shutil.which("make") is None or bu.find_nvcc() is None:
        pytest.skip("make or nvcc not found")
    root = Path(os.environ.get("GPT2DRIVER_TEST_BUILD_ROOT") or bu.REPO_ROOT / "build")
    out = {}
    for p in PRECISIONS:
        t0 = time.monotonic()
        try:
            out[p] = bu.build_engine(gpu_cc, p, root, _cublas_home(), jobs=os.cpu_count() or 4)
        except RuntimeError as e:
            pytest.fail(str(e))
        print(f"built sm{gpu_cc}_{p.lower()} in {time.monotonic() - t0:.1f}s")
    return out


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """name -> fp32 checkpoint path: 'gpt2' (124M shape) and 'custom' (24 layers, 16 heads,
    1024 channels, 1024 positions), both random."""
    d = tmp_path_factory.mktemp("models")
    paths = {}
    for name, cfg, seed in (("gpt2", ModelConfig.preset("gpt2"), 0),
                            ("custom", ModelConfig.custom(24, 16, 1024, max_seq_len=1024), 1)):
        paths[name] = ck.make_random_checkpoint(d / f"{name}_fp32.bin", cfg, dtype="fp32", seed=seed)
    return paths


@pytest.fixture(scope="session")
def reference_model(models):
    """reference_model(name, precision) -> (cfg, float64 CUDA tensors), cached."""
    host, dev = {}, {}

    def get(name, precision):
        if (name, precision) not in dev:
            if name not in host:
                cfg, params, _ = ck.read_checkpoint(models[name])
                host[name] = (cfg, params)
            cfg, params = host[name]
            # keep one model per name on the GPU at a time
            for key in [k for k in dev if k[0] == name]:
                del dev[key]
            torch.cuda.empty_cache()
            dev[(name, precision)] = (cfg, ref.to_torch(ref.round_weights(params, precision), "cuda"))
        return dev[(name, precision)]

    return get


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def dumped_steps(gen, stride):
    return [s for s in range(gen) if s % stride == 0 or s == gen - 1]


def generate(exe, ckpt, tmp_path, B, gen, *extra, dump=True, stride=1, timeout=RUN_TIMEOUT):
    """Run a generating executable once (no warm-up); return (Run, dump tuple or None)."""
    args = ["-e", ckpt, "-b", B, "-g", gen, "-q", "--warmup", 0, "--repeat", 1, *extra]
    path = tmp_path / f"{Path(exe).name}_{B}_{gen}_{time.monotonic_ns()}.logits"
    if dump:
        args += ["--dump-logits", path, "--dump-stride", stride]
    run = bu.run_exe(exe, *args, timeout=timeout)
    d = None
    if dump:
        d = ref.read_logits_dump(path)
        path.unlink()
    return run, d


def sequences(run, B):
    """[B, P + gen] token array (prompt + generated) of a run's tokens lines."""
    toks = run.tokens()
    assert sorted(toks) == list(range(B)), run.describe()
    return np.array([prompt + ids for prompt, ids in (toks[b] for b in range(B))], dtype=np.int64)


def check_against_reference(run, dump, seqs, cfg, model, precision, P, gen, stride, label):
    """Compare every dumped (step, row) with the reference; return the largest rel-err.
    Also checks the dump's header and steps, and that every greedy/sampled token is in range."""
    header, steps, pos, logits = dump
    B = seqs.shape[0]
    want_steps = dumped_steps(gen, stride)
    assert (header["B"], header["V"], header["prompt_len"], header["stride"]) == (B, cfg.vocab_size, P, stride)
    assert header["records"] == len(steps) and steps == want_steps, f"{label}: steps {steps[:5]}..."
    assert pos == [P - 1 + s for s in steps]
    assert seqs.shape[1] == P + gen and seqs.min() >= 0 and seqs.max() < cfg.vocab_size
    assert np.isfinite(logits).all(), f"{label}: non-finite logits"
    rel_max, where = 0.0, None
    # Positions [P-1, P+gen-2] are fed; the last generated token is never fed back.
    uniq, inverse = np.unique(seqs[:, :P + gen - 1], axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    chunk = 64  # positions per reference call, to bound memory at B=16
    for c0 in range(0, len(pos), chunk):
        pp, ss = pos[c0:c0 + chunk], steps[c0:c0 + chunk]
        r = ref.reference_logits(model, cfg, torch.from_numpy(uniq), positions=pp)  # [U, n, V]
        r = r[torch.from_numpy(inverse).to(r.device)]  # [B, n, V]
        e = torch.from_numpy(logits[c0:c0 + chunk]).to(r.device, torch.float64).transpose(0, 1)
        rel = (torch.linalg.vector_norm(e - r, dim=-1) / torch.linalg.vector_norm(r, dim=-1))
        m = float(rel.max())
        if m > rel_max:
            b, i = np.unravel_index(int(rel.argmax()), tuple(rel.shape))
            rel_max, where = m, (int(ss[i]), int(b))
    assert rel_max <= REL_TOL[precision], (
        f"{label}: rel-err {rel_max:.3g} > {REL_TOL[precision]:g} at (step, row) {where}")
    return rel_max


def check_greedy_tokens(dump, seqs, P, label):
    """Each greedy token is a maximum of the logits the engine dumped for its step."""
    _, steps, _, logits = dump
    for i, s in enumerate(steps):
        for b in range(seqs.shape[0]):
            tok = seqs[b, P + s]
            assert logits[i, b, tok] == logits[i, b].max(), (
                f"{label}: step {s} row {b} chose {tok} ({logits[i, b, tok]}) but the max logit is "
                f"{logits[i, b].max()} at {int(logits[i, b].argmax())}")


# ------------------------------------------------------------------------------------------------
# Teacher-forced logits: all variants, all precisions, B x prompt length
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B, P, gen, stride", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_greedy_matches_reference(bins, models, reference_model, tmp_path, precision, B, P, gen, stride):
    cfg, model = reference_model("gpt2", precision)
    seqs_by_variant, report = {}, []
    for v in VARIANTS:
        label = f"{v} {precision} B={B} P={P} gen={gen}"
        run, dump = generate(bins[precision] / v, models["gpt2"], tmp_path, B, gen, "--greedy",
                             "--prompt-len", P, "--seed", 1000 + P, stride=stride)
        conf = run.one("config")
        assert (conf["program"], conf["precision"], int(conf["B"]), int(conf["prompt_len"]),
                int(conf["gen"])) == (v, precision, B, P, gen), run.describe()
        seqs = sequences(run, B)
        assert (seqs[:, 0] == EOT).all(), "synthetic prompts start with EOT"
        if B > 1 and P > 2:  # synthetic prompts differ per row, so a row mix-up cannot hide
            assert len({seqs[b, :P].tobytes() for b in range(B)}) == B, "synthetic prompts differ per row"
        check_greedy_tokens(dump, seqs, P, label)
        rel = check_against_reference(run, dump, seqs, cfg, model, precision, P, gen, stride, label)
        report.append(f"{v}: max rel-err {rel:.3g}")
        seqs_by_variant[v] = seqs
    print(f"{precision} B={B} P={P} gen={gen}: " + ", ".join(report))
    prompts = {v: s[:, :P].tobytes() for v, s in seqs_by_variant.items()}
    assert len(set(prompts.values())) == 1, "the same --prompt-len/--seed gave different prompts"
    if precision == "FP32":
        for v in ("kvonly", "optimized"):
            diff = np.argwhere(seqs_by_variant[v] != seqs_by_variant["naive"])
            assert diff.size == 0, f"FP32 greedy tokens of {v} differ from naive at (row, pos) {diff[:5].tolist()}"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_sampled_rows_match_reference(bins, models, reference_model, tmp_path, precision):
    """Rows that differ (random sampling) are each checked against their own sequence, so a
    mix-up between rows (KV cache, positions, batch strides) shows."""
    cfg, model = reference_model("gpt2", precision)
    B, P, gen = 5, 9, 24
    for v in VARIANTS:
        label = f"{v} {precision} sampled"
        run, dump = generate(bins[precision] / v, models["gpt2"], tmp_path, B, gen, "-m", "0",
                             "--temperature", "1.0", "--prompt-len", P, "--seed", 9)
        seqs = sequences(run, B)
        assert len({s.tobytes() for s in seqs}) == B, f"{label}: rows should differ when sampling"
        rel = check_against_reference(run, dump, seqs, cfg, model, precision, P, gen, 1, label)
        print(f"{label}: max rel-err {rel:.3g}")


@pytest.mark.parametrize("precision", ["BF16", "FP32"])
def test_custom_shape_matches_reference(bins, models, reference_model, tmp_path, precision):
    """24 layers, 16 heads, 1024 channels (GPT-2 medium's shape, head size 64)."""
    cfg, model = reference_model("custom", precision)
    assert (cfg.num_layers, cfg.num_heads, cfg.channels, cfg.max_seq_len) == (24, 16, 1024, 1024)
    B, P, gen = 3, 100, 40
    seqs_by_variant = {}
    for v in VARIANTS:
        label = f"{v} {precision} custom"
        run, dump = generate(bins[precision] / v, models["custom"], tmp_path, B, gen, "--greedy",
                             "--prompt-len", P, "--seed", 77)
        conf = run.one("config")
        assert (int(conf["L"]), int(conf["NH"]), int(conf["C"])) == (24, 16, 1024)
        seqs = sequences(run, B)
        check_greedy_tokens(dump, seqs, P, label)
        rel = check_against_reference(run, dump, seqs, cfg, model, precision, P, gen, 1, label)
        print(f"{label}: max rel-err {rel:.3g}")
        seqs_by_variant[v] = seqs
    if precision == "FP32":
        for v in ("kvonly", "optimized"):
            assert np.array_equal(seqs_by_variant[v], seqs_by_variant["naive"]), v


# ------------------------------------------------------------------------------------------------
# validate
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", PRECISIONS)
def test_validate_passes_and_can_fail(bins, models, precision):
    exe = bins[precision] / "validate"
    args = ["-e", models["gpt2"], "-b", 2, "-g", 64, "--prompt-len", 5, "-q"]
    ok = bu.run_exe(exe, *args, timeout=RUN_TIMEOUT, expect=0)
    summ = {s["variant"]: s for s in ok.all("vsummary")}
    assert sorted(summ) == ["kvonly", "optimized"], ok.describe()
    for v, s in summ.items():
        print(f"validate {precision} {v}: max_abs={s['max_abs']} rmse={s['rmse']} match={s['match_frac']}")
        assert s["result"] == "PASS", f"{v}: {s}"
        assert int(s["steps"]) == 64 and int(s["rows"]) == 2
    assert len(ok.all("vstep")) == 2 * 64 * 2
    assert ok.done == 0

    bad = bu.run_exe(exe, *args, "--max-abs", "0", timeout=RUN_TIMEOUT, expect=1)
    res = {s["variant"]: s for s in bad.all("vsummary")}
    assert "FAIL" in {s["result"] for s in res.values()}, bad.describe()
    for s in res.values():  # a variant fails exactly when it differs from naive at all
        assert (s["result"] == "FAIL") == (float(s["max_abs"]) > 0), s
        assert float(s["tol_max_abs"]) == 0
    assert bad.done == 1


# ------------------------------------------------------------------------------------------------
# Random sampling
# ------------------------------------------------------------------------------------------------

SAMPLING = ["-m", "0", "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9",
            "--prompt-ids", "50256,464,2068,7586,21831"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_sampling_is_deterministic(bins, models, tmp_path, variant):
    exe = bins["BF16"] / variant
    B, gen = 4, 32
    a, dump = generate(exe, models["gpt2"], tmp_path, B, gen, *SAMPLING, "--seed", 5)
    b, _ = generate(exe, models["gpt2"], tmp_path, B, gen, *SAMPLING, "--seed", 5, dump=False)
    c, _ = generate(exe, models["gpt2"], tmp_path, B, gen, *SAMPLING, "--seed", 6, dump=False)
    sa, sb, sc = sequences(a, B), sequences(b, B), sequences(c, B)
    diff = np.argwhere(sa != sb)
    assert diff.size == 0, (f"{variant}: the same seed gave different tokens (the first run also "
                            f"dumped logits); first differences at (row, pos) {diff[:4].tolist()}")
    assert not np.array_equal(sa[:, 5:], sc[:, 5:]), "another seed gave the same tokens"
    assert (sa[:, :5] == [50256, 464, 2068, 7586, 21831]).all()
    assert sa.min() >= 0 and sa.max() < 50257
    # top-k 40: every sampled token ranks among the 40 largest logits of its step
    _, steps, _, logits = dump
    for i, s in enumerate(steps):
        for r in range(B):
            tok = sa[r, 5 + s]
            higher = int((logits[i, r] > logits[i, r, tok]).sum())
            assert higher < 40, f"step {s} row {r}: token {tok} has {higher} larger logits (top-k 40)"


# ------------------------------------------------------------------------------------------------
# Error paths
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    cfg = ModelConfig.custom(layers=2, heads=2, channels=64, max_seq_len=64, vocab_size=50257)
    return ck.make_random_checkpoint(tmp_path_factory.mktemp("small") / "small.bin", cfg,
                                     dtype="bf16", seed=2)


@pytest.mark.parametrize("program", ["naive", "kvonly", "optimized", "validate", "profile"])
def test_error_exits(bins, models, small_ckpt, tmp_path, program):
    exe = bins["BF16"] / program

    def err(code, *args_and_needles):
        *args, needles = args_and_needles
        r = bu.run_exe(exe, *args, timeout=120, expect=None)
        return bu.assert_error_output(r, code, *needles)

    err(2, "-e", models["gpt2"], "--gen", "2000", ["max_seq_len", "1024"])
    err(2, "-e", models["gpt2"], "--prompt-len", "1000", "--gen", "25", ["max_seq_len"])
    err(2, "-e", small_ckpt, "--gen", "64", ["max_seq_len", "64"])
    err(2, "-e", models["gpt2"], "--prompt-ids", "999999", ["999999"])
    err(2, "-e", models["gpt2"], "--device", "99", ["--device"])
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(small_ckpt.read_bytes()[:-100])
    err(3, "-e", truncated, ["truncated"])
    magic = tmp_path / "magic.bin"
    data = bytearray(small_ckpt.read_bytes())
    data[0:4] = (12345).to_bytes(4, "little")
    magic.write_bytes(bytes(data))
    err(3, "-e", magic, ["magic"])
    err(3, "-e", tmp_path / "missing.bin", ["missing.bin"])


# ------------------------------------------------------------------------------------------------
# The two decode paths of optimized (the default v1 kernels; the experimental v2 short links) on the
# 124M shape and on gpt2-xl's and gpt2-large's head layouts (25 and 20 heads of 64; two layers)
# ------------------------------------------------------------------------------------------------

HEAD_SHAPES = {"xlheads": (2, 25, 1600), "largeheads": (2, 20, 1280)}


@pytest.fixture(scope="module")
def head_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("heads")
    out = {}
    for i, (name, (layers, heads, channels)) in enumerate(HEAD_SHAPES.items()):
        cfg = ModelConfig.custom(layers, heads, channels, max_seq_len=1024)
        out[name] = ck.make_random_checkpoint(d / f"{name}_fp32.bin", cfg, dtype="fp32", seed=3 + i)
    return out


@pytest.mark.parametrize("B", [1, 16])
@pytest.mark.parametrize("shape", ["gpt2", *HEAD_SHAPES])
@pytest.mark.parametrize("precision", ["BF16", "FP16"])
def test_decode_paths_match_reference(bins, models, head_models, reference_model, tmp_path, precision, shape, B):
    path = models["gpt2"] if shape == "gpt2" else head_models[shape]
    if shape == "gpt2":
        cfg, model = reference_model("gpt2", precision)
    else:
        cfg, params, _ = ck.read_checkpoint(path)
        model = ref.to_torch(ref.round_weights(params, precision), "cuda")
    P, gen = 7, 40
    for flags in ((), ("--short-links",)):
        label = f"optimized {' '.join(flags) or 'v1'} {precision} {shape} B={B}"
        run, dump = generate(bins[precision] / "optimized", path, tmp_path, B, gen, "--greedy", *flags,
                             "--prompt-len", P, "--seed", 21)
        seqs = sequences(run, B)
        check_greedy_tokens(dump, seqs, P, label)
        rel = check_against_reference(run, dump, seqs, cfg, model, precision, P, gen, 1, label)
        print(f"{label}: max rel-err {rel:.3g}")
    del model
    torch.cuda.empty_cache()

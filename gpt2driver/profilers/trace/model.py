"""The trace records of a ``profile --trace`` output (docs/protocol.md, "Trace records") as a
:class:`Timeline`: kernels in step order, the NVTX ranges, the stamped kernels, and the ``trace`` record
that says how the executable placed the kernels in steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ...errors import ProfilingError
from ...protocol import RunResult, parse_line, parse_output
from .names import demangle, display_name


@dataclass
class Kernel:
    step: int
    idx: int
    name: str  # mangled, as CUPTI gives it
    stream: int
    start: int  # ns from the trace's origin
    end: int
    stage: str = ""
    layer: str = ""
    corr: int = 0
    node: int = 0
    grid: str = ""
    block: str = ""
    demangled: str = ""
    label: str = ""  # demangled and shortened

    @property
    def dur(self) -> int:
        return self.end - self.start


@dataclass
class Range:
    step: int
    name: str
    depth: int
    start: int  # CPU time, ns from the origin
    end: int
    kernels: int = 0
    gpu_start: Optional[int] = None  # its kernels' first start and last end on the GPU
    gpu_end: Optional[int] = None
    launched: Optional[int] = None  # MEASURE only: kernels the step launched


@dataclass
class Stamp:
    stage: int
    name: str
    start: int
    end: int
    union_ns: int
    mean_ns: float
    blocks: int


@dataclass
class Stamped:
    slot: int
    step: int
    idx: int  # the kernel's index in its step (-1: not found)
    label: str
    kernel: str
    stages: List[str]
    blocks: int
    stamps: List[Stamp] = field(default_factory=list)
    # the union over every block and stage (ns): the time any block was in a stamped stage; None from executables
    # that did not say (their stage unions are summed instead, which counts blocks in different stages twice)
    covered_ns: Optional[int] = None


@dataclass
class Timeline:
    info: Dict[str, object]  # the trace record
    check: Dict[str, object]  # the executable's own tracecheck record
    kernels: List[Kernel]
    ranges: List[Range]
    stamped: List[Stamped]
    result: RunResult = field(default_factory=RunResult)

    @property
    def steps(self) -> int:
        return int(self.info.get("steps") or 0)

    def step_kernels(self, step: int) -> List[Kernel]:
        return [k for k in self.kernels if k.step == step]

    def step_begin(self, step: int) -> int:
        """Where the step's time begins: the end of the kernel before its first one (the previous
        step's last kernel, or the traced warm-up's for step 0)."""
        if step > 0:
            before = self.step_kernels(step - 1)
            if before:
                return before[-1].end
        prev = self.info.get("prev_end")
        if isinstance(prev, int):
            return prev
        own = self.step_kernels(step)
        return own[0].start if own else 0

    @property
    def untraced_step_us(self) -> Optional[float]:
        ms = self.info.get("untraced_step_ms", self.result.profile.get("step_ms"))
        return float(ms) * 1e3 if isinstance(ms, (int, float)) and ms > 0 else None

    @property
    def order(self) -> str:
        """How the measured steps' kernels were placed without their launch calls: graph-order,
        label-order, or none (by their launch calls)."""
        return str(self.info.get("order") or "none")


def as_int(value, default: int = 0) -> int:
    """A record's number as an int (``default`` for a missing or non-numeric value)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def api_summary(info: Dict[str, object]) -> str:
    """What CUPTI delivered besides kernels, from the trace record: '0 runtime, 0 driver API records
    (asked for as cbids, enabling ok)'; '' for an executable that did not say."""
    if "api_runtime" not in info:
        return ""
    return (f"{as_int(info.get('api_runtime'))} runtime, {as_int(info.get('api_driver'))} driver API records "
            f"(asked for as {info.get('api_mode') or '?'}, enabling: {info.get('api_enable') or '?'})")


def no_kernel_message(info: Dict[str, object]) -> str:
    """Why a trace holds no kernel of a measured step, in one line."""
    kernels, calls = as_int(info.get("kernels")), as_int(info.get("launch_calls"))
    if "order" not in info and kernels and not calls:
        return (f"the trace holds no kernel record of a measured step: CUPTI delivered {kernels} kernels and 0 "
                f"launch calls, and this profile executable predates placing kernels without their launch call, "
                f"so it printed no kernel records (it prints only the kernels it ties to a step) and the steps "
                f"cannot be rebuilt from this output: rebuild it (gpt2driver build) and trace again")
    api = api_summary(info)
    return (f"the trace holds no kernel of a measured step (CUPTI delivered {kernels} kernels and {calls} launch "
            f"calls, {info.get('dropped', 0)} records dropped, {info.get('steps', 0)} MEASURE ranges"
            + (f"; {api}" if api else "") + (f"; launch order: {info.get('order')}" if "order" in info else "")
            + "): check that --steps >= 1 and that CUPTI may trace here")


def parse_trace(text: str) -> Timeline:
    """The trace records of a ``profile --trace`` output -> a Timeline (kernels in step order, names
    demangled). ProfilingError when it holds no trace or no kernel of a measured step."""
    info: Dict[str, object] = {}
    check: Dict[str, object] = {}
    kernels: List[Kernel] = []
    ranges: List[Range] = []
    stamped: Dict[int, Stamped] = {}
    for line in text.splitlines():
        parsed = parse_line(line)
        if parsed is None:
            continue
        rec, f = parsed
        if rec == "trace":
            info = f
        elif rec == "tracecheck":
            check = f
        elif rec == "kernel":
            kernels.append(Kernel(step=as_int(f.get("step")), idx=as_int(f.get("idx")), name=str(f.get("name", "")),
                                  stream=as_int(f.get("stream")), start=as_int(f.get("start")),
                                  end=as_int(f.get("end")), stage=str(f.get("stage", "")),
                                  layer=str(f.get("layer", "")), corr=as_int(f.get("corr")),
                                  node=as_int(f.get("node")), grid=str(f.get("grid", "")),
                                  block=str(f.get("block", ""))))
        elif rec == "range":
            ranges.append(Range(step=as_int(f.get("step")), name=str(f.get("name", "")), depth=as_int(f.get("depth")),
                                start=as_int(f.get("start")), end=as_int(f.get("end")),
                                kernels=as_int(f.get("kernels")),
                                gpu_start=f.get("gpu_start") if "gpu_start" in f else None,
                                gpu_end=f.get("gpu_end") if "gpu_end" in f else None,
                                launched=f.get("launched") if "launched" in f else None))
        elif rec == "stampdef":
            slot = as_int(f.get("slot"))
            stamped[slot] = Stamped(slot=slot, step=as_int(f.get("step")), idx=as_int(f.get("idx"), -1),
                                    label=str(f.get("label", "")), kernel=str(f.get("kernel", "")),
                                    stages=[s for s in str(f.get("stages", "")).split(",") if s],
                                    blocks=as_int(f.get("blocks")),
                                    covered_ns=as_int(f.get("covered_ns")) if "covered_ns" in f else None)
        elif rec == "stamp" and as_int(f.get("slot"), -1) in stamped:
            stamped[as_int(f.get("slot"))].stamps.append(
                Stamp(stage=as_int(f.get("stage")), name=str(f.get("name", "")), start=as_int(f.get("start")),
                      end=as_int(f.get("end")), union_ns=as_int(f.get("union_ns")),
                      mean_ns=float(f.get("mean_ns") or 0.0), blocks=as_int(f.get("blocks"))))
    if not info:
        raise ProfilingError("the profile executable printed no trace records: rebuild it (gpt2driver build) "
                             "so that it takes --trace")
    if not kernels:
        raise ProfilingError(no_kernel_message(info))
    kernels.sort(key=lambda k: (k.step, k.idx))
    names = demangle(sorted({k.name for k in kernels}))
    for k in kernels:
        k.demangled = names.get(k.name, k.name)
        k.label = display_name(k.demangled)
    res = parse_output(text, require_done=False)
    return Timeline(info, check, kernels, ranges, [stamped[s] for s in sorted(stamped)], res)

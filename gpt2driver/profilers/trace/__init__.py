"""``gpt2driver profile --tool trace``: the decode step's kernels on a timeline, without Nsight Systems.

The profile executable's ``--trace --stamps`` (docs/protocol.md, "Trace records") records every kernel of
the measured steps through CUPTI (loaded at run time), the NVTX ranges' CPU times and the fused kernels'
in-kernel stage stamps, and prints them as ``##GPT2D`` records. The modules, in the order of the flow:

- :mod:`.model`: :func:`parse_trace`, the records -> a :class:`Timeline` (kernels, ranges, stamped kernels;
  ns from the trace's origin; how the executable placed kernels in steps);
- :mod:`.names`: kernel names demangled and shortened for display;
- :mod:`.frames`: :func:`kernel_table` / :func:`step_totals` / :func:`stamp_table` / :func:`stage_budget`: per
  kernel (stage, start offset, duration, gap before it), per step (step time = kernel time + gaps, idle time,
  % idle), per stage (what it adds to the step's chain), per stamped stage, and per stamped kernel label
  (each stage's time and the completion tail);
- :mod:`.checks`: :func:`checks` (kernels per step against the launches and the launch order, the traced step
  against the untraced one, the stamps against their kernel's duration: 5 %) and :func:`summarize`;
- :mod:`.chrome`: :func:`chrome_trace`, Chrome trace JSON (Perfetto, chrome://tracing);
- :mod:`.png`: :func:`plot_step`, a PNG of one step (matplotlib, optional);
- :mod:`.run`: :func:`run_trace`, runs the executable and writes all of it into a results folder.
"""

from .checks import TOLERANCE, Check, checks, summarize
from .chrome import chrome_trace, write_chrome_trace
from .frames import assign_lanes, kernel_table, link_table, stage_budget, stamp_table, step_totals
from .model import Kernel, Range, Stamp, Stamped, Timeline, parse_trace
from .names import NAME_WIDTH, demangle, demangle_lite, display_name
from .png import plot_step
from .run import CUPTI_DIR_ENV, TRACE_FLAGS, TraceReport, cupti_wheel_dir, run_trace

__all__ = [
    "CUPTI_DIR_ENV", "Check", "Kernel", "NAME_WIDTH", "Range", "Stamp", "Stamped", "TOLERANCE", "TRACE_FLAGS",
    "Timeline", "TraceReport", "assign_lanes", "checks", "chrome_trace", "cupti_wheel_dir", "demangle",
    "demangle_lite", "display_name", "kernel_table", "link_table", "parse_trace", "plot_step", "run_trace", "stage_budget",
    "stamp_table",
    "step_totals", "summarize", "write_chrome_trace",
]

"""Profiling the ``profile`` executable: Nsight Systems (:mod:`.nsys`), Nsight Compute
(:mod:`.ncu`) or its built-in stage timer (:mod:`.builtin`), each into the one table of
:mod:`.tables`; :mod:`.common` holds what they share and :mod:`.session` runs a profiling session.

Each layer is small: command lines (pure), parsers (text in, DataFrame out), and glue that runs
the tools and keeps every file in a results folder. The names below are the package's API.
"""

from ..errors import ProfilingError
from .builtin import builtin_table, run_builtin
from .common import (DEFAULT_COPY_GBPS, MEASURE_RANGE, NVTX_DOMAIN, PHASES, PREFILL_RANGE, TOOLS,
                     ProfileReport, ToolRun, check_run, diagnose, empty_capture_message,
                     ncu_nvtx_include, nsys_capture, permission_message, profile_args,
                     require_tool, results_dir, run_tool, save_report, split_list)
from .ncu import (NCU_DEFAULT_METRICS, NcuOptions, ncu_command, ncu_table, nvtx_stage,
                  parse_ncu_csv, run_ncu)
from .nsys import (find_stats_csv, measured_steps, nsys_command, nsys_stats_command,
                   parse_nsys_kern_sum, parse_nsys_nvtx_sum, run_nsys)
from .tables import (BASE_COLUMNS, combined_frame, format_table, short_kernel_name, summarize,
                     to_number, with_ceiling)

__all__ = [
    "BASE_COLUMNS", "DEFAULT_COPY_GBPS", "MEASURE_RANGE", "NCU_DEFAULT_METRICS", "NVTX_DOMAIN",
    "NcuOptions", "PHASES", "PREFILL_RANGE", "ProfileReport", "ProfilingError", "TOOLS", "ToolRun",
    "builtin_table", "check_run", "combined_frame", "diagnose", "empty_capture_message",
    "find_stats_csv", "format_table", "measured_steps", "ncu_command", "ncu_nvtx_include",
    "ncu_table", "nsys_capture", "nsys_command", "nsys_stats_command", "nvtx_stage",
    "parse_ncu_csv", "parse_nsys_kern_sum", "parse_nsys_nvtx_sum", "permission_message",
    "profile_args", "require_tool", "results_dir", "run_builtin", "run_ncu", "run_nsys",
    "run_tool", "save_report", "short_kernel_name", "split_list", "summarize", "to_number",
    "with_ceiling",
]

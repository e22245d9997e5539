"""Kernel names as CUPTI gives them (mangled) -> demangled (c++filt, else a small reader) -> shortened for
the timeline."""

from __future__ import annotations

import shutil
import subprocess
from typing import Dict, Iterable, List

from ..tables import short_kernel_name

NAME_WIDTH = 48


def demangle_lite(name: str) -> str:
    """A mangled C++ name's scope and name, templates as '<…>', no arguments:
    '_ZN2gd12_GLOBAL__N_1L5k_fooILi1EEEvPf' -> 'gd::(anonymous namespace)::k_foo<…>'.
    Names it cannot read (extern "C" names such as cuBLAS's) come back unchanged."""
    if not name.startswith("_Z"):
        return name
    s, i = name, 2
    parts: List[str] = []
    templated = False
    nested = i < len(s) and s[i] == "N"
    if nested:
        i += 1
        while i < len(s) and s[i] in "KVrRO":  # cv- and ref-qualifiers of a member function
            i += 1
    while i < len(s):
        c = s[i]
        if c == "L":  # internal linkage
            i += 1
        elif c.isdigit():
            j = i
            while j < len(s) and s[j].isdigit():
                j += 1
            n = int(s[i:j])
            ident = s[j:j + n]
            if len(ident) < n:
                return name
            parts.append("(anonymous namespace)" if ident.startswith("_GLOBAL__N") else ident)
            i = j + n
            if not nested:
                templated = i < len(s) and s[i] == "I"
                break
        elif s.startswith("St", i):
            parts.append("std")
            i += 2
        else:
            templated = c == "I"
            break
    return "::".join(parts) + ("<…>" if templated else "") if parts else name


def demangle(names: Iterable[str]) -> Dict[str, str]:
    """mangled -> demangled, with c++filt when it is installed (one call for all), else
    demangle_lite."""
    names = list(names)
    out = {n: n for n in names}
    mangled = [n for n in names if n.startswith("_Z")]
    if not mangled:
        return out
    tool = shutil.which("c++filt")
    if tool:
        try:
            proc = subprocess.run([tool], input="\n".join(mangled) + "\n", capture_output=True, text=True,
                                  timeout=60)
            lines = proc.stdout.splitlines()
            if proc.returncode == 0 and len(lines) == len(mangled):
                out.update(zip(mangled, lines))
                return out
        except (OSError, subprocess.TimeoutExpired):
            pass
    out.update((n, demangle_lite(n)) for n in mangled)
    return out


_TYPE_SHORT = (("__nv_bfloat16", "bf16"), ("__half", "half"))


def display_name(demangled: str, width: int = NAME_WIDTH) -> str:
    """A demangled name as shown on the timeline: no return type, scope or arguments, short type
    names, at most ``width`` characters."""
    text = short_kernel_name(demangled.replace("(anonymous namespace)::", ""))
    for long, short in _TYPE_SHORT:
        text = text.replace(long, short)
    return text if len(text) <= width else text[: width - 1] + "…"

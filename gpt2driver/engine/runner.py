"""Find the executables and run them (docs/protocol.md): argument lists in, RunResult out."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .. import names
from ..errors import ProtocolError, RunError
from ..protocol import EXIT_CODES, RunResult, parse_output
from . import preflight

PathLike = Union[str, "os.PathLike[str]"]


def tail(text: str, lines: int = 15) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def spawn_group(argv: Sequence[str], env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
    """Start ``argv`` (a list, never a shell) in its own process group, text pipes for stdout and stderr.
    Raises OSError when it cannot start."""
    return subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", env=env, start_new_session=True)


def communicate_group(proc: subprocess.Popen, timeout: float) -> Tuple[str, str, bool]:
    """(stdout, stderr, timed_out) of a child started by spawn_group. On a timeout the whole group is
    killed and what it wrote is returned; on any other exception (Ctrl-C included) the group is killed
    and the exception goes on: the child never outlives the call."""
    try:
        out, err = proc.communicate(timeout=timeout)
        return out, err, False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        return out, err, True
    except BaseException:
        kill_group(proc)
        proc.wait()
        raise


@dataclass
class Captured:
    """What a child said and how it ended."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool


def run_captured(argv: Sequence[str], timeout: float,
                 env: Optional[Mapping[str, str]] = None) -> Captured:
    """Run ``argv`` in its own process group (see :func:`communicate_group`); OSError when it
    cannot start, BadInput for a timeout out of range (preflight.check_timeout)."""
    timeout = preflight.check_timeout(timeout)
    proc = spawn_group(argv, env)
    out, err, timed_out = communicate_group(proc, timeout)
    return Captured(proc.returncode, out, err, timed_out)


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"was killed by {name}"
    return f"exited with code {rc} ({EXIT_CODES.get(rc, 'unknown exit code')})"


def run_binary(path: PathLike, args: Sequence[str], timeout: float,
               env: Optional[Mapping[str, str]] = None,
               ok_codes: Iterable[int] = (0,)) -> RunResult:
    """Run ``path args...`` and parse its stdout.

    The child gets its own process group, so a timeout or Ctrl-C kills it with all its children.
    Raises RunError on a timeout, a signal, an exit code not in ``ok_codes`` or garbled output.
    """
    path = Path(path)
    name = path.name
    cmd = [str(path), *[str(a) for a in args]]
    full_env = None if env is None else {**os.environ, **env}
    try:
        run = run_captured(cmd, timeout, full_env)
    except OSError as e:
        raise RunError(preflight.cannot_start(path, e)) from None
    out, err = run.stdout, run.stderr
    if run.timed_out:
        raise RunError(f"{name} timed out after {timeout:g} s and was killed"
                       + (f"; stderr:\n{tail(err)}" if err.strip() else ""),
                       stderr_tail=tail(err))
    rc = run.returncode
    err_tail = tail(err)
    accepted = rc in tuple(ok_codes)
    try:
        result = parse_output(out, require_done=accepted)
    except ProtocolError as e:
        raise RunError(f"{name}: unreadable output: {e}", returncode=rc, stderr_tail=err_tail) from None
    if accepted:
        return result
    msg = f"{name} {describe_exit(rc)}"
    if result.errors:
        msg += f": {result.error_message}"
    # stderr repeats the error record as "error: <msg>"; show only what it adds.
    extra = "\n".join(l for l in err_tail.splitlines()
                      if l.strip() and l.strip().removeprefix("error:").strip() not in result.errors)
    if extra:
        msg += f"\nstderr:\n{extra}"
    raise RunError(msg, returncode=rc, stderr_tail=err_tail, result=result)


def engine_args(checkpoint: PathLike, *, tokenizer: Optional[PathLike] = None,
                batch: Optional[int] = None, gen: Optional[int] = None, greedy: bool = True,
                temperature: Optional[float] = None, top_k: Optional[int] = None,
                top_p: Optional[float] = None, seed: Optional[int] = None,
                prompt_ids: Optional[Sequence[int]] = None, prompt_len: Optional[int] = None,
                warmup: Optional[int] = None, repeat: Optional[int] = None, quiet: bool = True,
                dump_logits: Optional[PathLike] = None,
                dump_stride: Optional[int] = None, ablate: str = names.ALL_ON) -> List[str]:
    """The common command line of the executables; None leaves the executable's default.
    ``ablate`` (``none``, a switch name, or names joined by +) adds the --no-<name> switches."""
    if prompt_ids is not None and prompt_len is not None:
        raise ValueError("give prompt_ids or prompt_len, not both")
    args = ["-e", str(checkpoint)]

    def opt(flag: str, value) -> None:
        if value is not None:
            args.extend([flag, str(value)])

    opt("-tk", tokenizer)
    opt("-b", batch)
    opt("-g", gen)
    if greedy:
        args.append("--greedy")
    else:
        args.extend(["-m", "0"])
        opt("--temperature", temperature)
        opt("--top-k", top_k)
        opt("--top-p", top_p)
    opt("-s", seed)
    if prompt_ids is not None:
        if len(prompt_ids) == 0:
            raise ValueError("prompt_ids is empty")
        args.extend(["--prompt-ids", ",".join(str(int(i)) for i in prompt_ids)])
    opt("--prompt-len", prompt_len)
    opt("--warmup", warmup)
    opt("--repeat", repeat)
    opt("--dump-logits", dump_logits)
    opt("--dump-stride", dump_stride)
    args.extend(names.ablation_flags(ablate))
    if quiet:
        args.append("-q")
    return args

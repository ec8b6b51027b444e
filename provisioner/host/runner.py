"""The one place that starts processes. Commands are argv lists, never shell strings."""
from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass

from ..errors import CommandFailed, VnetError


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(argv: list[str], *, check: bool = True, input: str | None = None,
        timeout: float | None = None, env: dict[str, str] | None = None,
        cwd: str | None = None) -> Result:
    """Run argv to completion and capture its output; raise CommandFailed on a non-zero exit."""
    if isinstance(argv, str):  # a programming error, never user input
        raise TypeError("runner.run takes an argv list, not a string")
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout, env=full_env, cwd=cwd, check=False)
    except FileNotFoundError as exc:
        raise _not_installed(argv) from exc
    except subprocess.TimeoutExpired as exc:
        raise VnetError(f"timed out after {timeout:g}s: {shlex.join(argv)}") from exc
    result = Result(list(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandFailed(list(argv), proc.returncode, proc.stderr or proc.stdout)
    return result


def spawn(argv: list[str], *, log_path: str, env: dict[str, str] | None = None,
          cwd: str | None = None, stdout: int | None = None) -> subprocess.Popen:
    """Start a long-lived process in its own session (it outlives the CLI); output to log_path,
    or only its stderr when `stdout` (a file descriptor: a capture streamed to a pipe) is given."""
    full_env = None if env is None else {**os.environ, **env}
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=log if stdout is None else stdout, stderr=log,
                                env=full_env, cwd=cwd, start_new_session=True)


def start_quiet(argv: list[str]) -> subprocess.Popen:
    """Start a helper whose output nobody reads (every stream on /dev/null); the caller ends it
    by its PID."""
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise _not_installed(argv) from exc


def _not_installed(argv: list[str]) -> VnetError:
    return VnetError(f"{argv[0]} is not installed or not on PATH",
                     hint="run `vnet doctor` to see what this machine lacks")


def start(argv: list[str]) -> subprocess.Popen:
    """Start a short-lived process whose stdout the caller reads as it comes (and kills)."""
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)


def which(name: str) -> str | None:
    import shutil

    return shutil.which(name)

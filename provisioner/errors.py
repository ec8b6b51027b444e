"""The few error types vnet raises. Only cli.py turns them into messages and exit codes."""
from __future__ import annotations

from enum import IntEnum


QUOTE_LIMIT = 60


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr(value) for a message, cut to `limit` characters: a 1 MB value stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


class ExitStatus(IntEnum):
    OK = 0
    CHECKS_FAILED = 1      # the lab runs, but the network does not keep its promises
    BAD_INPUT = 2          # lab file, flags or an unsupported combination: nothing was created
    ENVIRONMENT = 3        # hypervisor, command or host problem; also an internal error (a bug)
    INTERRUPTED = 130


class VnetError(Exception):
    """Base error: a one-line message and an optional hint that says what to do."""

    status = ExitStatus.ENVIRONMENT

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class LabFileError(VnetError):
    """Invalid lab: `path` names the field, e.g. "vms.web1.nics[1].network"."""

    status = ExitStatus.BAD_INPUT

    def __init__(self, path: str, message: str, hint: str | None = None):
        super().__init__(f"{path}: {message}" if path else message, hint)
        self.path = path


class Unsupported(VnetError):
    """A valid lab asks for something this backend or machine cannot do."""

    status = ExitStatus.BAD_INPUT


class CommandFailed(VnetError):
    def __init__(self, argv: list[str], returncode: int, stderr: str):
        import shlex

        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "(no stderr)"
        super().__init__(f"command failed (exit {returncode}): {shlex.join(argv)}: {tail}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class HypervisorError(VnetError):
    pass


class NotFound(VnetError):
    status = ExitStatus.BAD_INPUT


class VerificationFailed(VnetError):
    status = ExitStatus.CHECKS_FAILED


class NeedsRoot(VnetError):
    """The command needs root and the caller is not: nothing was read or written."""

    status = ExitStatus.BAD_INPUT

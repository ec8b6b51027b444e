"""Packet capture on the host side of a lab link: a network's bridge or a VM NIC's tap, in the
sandbox's hypervisor-host namespace (where the private libvirtd made them) or on this host.

Why tcpdump (from the distribution) and not an AF_PACKET socket in Python: the user's
`--filter` is a BPF expression, and only libpcap compiles those (Python has no BPF compiler,
and filtering in Python would copy every frame of a busy bridge to user space first); tcpdump
also puts the interface in promiscuous mode, which a Linux bridge needs to pass up the frames it
forwards between two ports (br_handle_frame_finish: local_rcv when the bridge is IFF_PROMISC),
and it writes standard pcap to a file or to stdout (`-w -`), packet by packet (`-U`).

A capture is a process vnet starts and stops by PID (host/procs.py): its record sits in the
lab's directory, and its marker is the capture's filter file there (`-F FILE`), unique per
capture, so a stop never signals another tcpdump. A pcap path from the user is resolved and
checked under its parent (host/safepath.py) before tcpdump is started.
"""
from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from . import procs, runner
from ..errors import LabFileError, VnetError
from .netns import netns_argv
from .safepath import child

START_TIMEOUT = 10.0         # tcpdump prints "listening on" once its socket is open
LISTENING = "listening on"
_serial = itertools.count()


@dataclass(frozen=True)
class CapturePoint:
    """Where a lab link can be watched from the host, as a Driver says (drivers/base.py)."""
    label: str                    # for people: "a:0 (tap vnet3)", "network site-a (bridge ...)"
    interface: str | None         # host-side interface tcpdump opens; None: the hypervisor traces
    netns: str | None = None      # the namespace it lives in (the sandbox host's); None: here


@dataclass
class Capture:
    """A running tcpdump; `stop` ends it."""
    point: CapturePoint
    pcap: str                     # a file path, or "-" for stdout
    record: Path
    filter_file: Path
    log: Path
    pid: int
    started_in: float             # seconds from spawn to "listening on": the capture is live
    proc: object = None

    def running(self) -> bool:
        return procs.running(self.record) is not None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for tcpdump to end by itself (--count); its exit status (None on timeout)."""
        try:
            return self.proc.wait(timeout)      # our own child: reaped here
        except Exception:     # noqa: BLE001 - subprocess.TimeoutExpired
            return None

    def stop(self) -> dict:
        """Stop tcpdump (SIGTERM: it flushes the file), remove its files; what it wrote."""
        procs.stop(self.record)
        if self.proc is not None:
            self.proc.wait()
        self.filter_file.unlink(missing_ok=True)
        summary = {"pcap": self.pcap, "interface": self.point.interface,
                   "start_latency_s": round(self.started_in, 3)}
        if self.pcap != "-" and os.path.exists(self.pcap):
            summary["bytes"] = os.path.getsize(self.pcap)
        summary["tcpdump"] = _stats(self.log)
        return summary


def pcap_path(path: Path | str) -> Path:
    """A pcap file the user named, resolved and checked to sit directly under its (existing)
    parent directory; a symlink out of it, or a directory, is refused (exit 2)."""
    given = Path(path)
    parent = given.parent if str(given.parent) else Path(".")
    if not parent.resolve().is_dir():
        raise LabFileError("-w", f"{given.parent} is not a directory")
    resolved = child(parent, given.name)
    if resolved.exists() and not resolved.is_file():
        raise LabFileError("-w", f"{resolved} exists and is not a regular file")
    return resolved


def check_filter(bpf: str) -> None:
    """Compile the filter for Ethernet without opening anything (`tcpdump -d`): a bad filter is
    bad input (exit 2), said before any capture starts."""
    if not bpf:
        return
    require_tcpdump()
    result = runner.run(["tcpdump", "-y", "EN10MB", "-d", "--", bpf], check=False)
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["rejected"])[-1].removeprefix("tcpdump: ")
        raise LabFileError("--filter", f"{bpf!r} is not a BPF filter tcpdump accepts: {why}",
                           hint="see pcap-filter(7), e.g. --filter 'udp port 4789'")


def require_tcpdump() -> None:
    if runner.which("tcpdump") is None:
        raise VnetError("capturing needs tcpdump, which is not installed",
                        hint="apt-get install tcpdump")


def tcpdump_argv(point: CapturePoint, pcap: str, filter_file: Path,
                 count: int | None = None) -> list[str]:
    """`-Z root`: tcpdump would drop to user tcpdump and could not write vnet's root-owned
    directories; `--immediate-mode -U`: each frame reaches the file (or pipe) as it comes."""
    argv = ["tcpdump", "-i", str(point.interface), "-n", "-s", "0", "--immediate-mode", "-U",
            "-Z", "root", "-w", pcap, "-F", str(filter_file)]
    argv += ["-c", str(count)] if count else []
    return netns_argv(point.netns, argv) if point.netns else argv


def start(point: CapturePoint, pcap: Path | str, work_dir: Path, bpf: str = "",
          count: int | None = None, stdout: int | None = None) -> Capture:
    """Start tcpdump on the point and wait until it listens. `pcap`: a checked path, or "-"
    with `stdout` the file descriptor the pcap stream goes to. tcpdump never opens a path
    itself (as root it would write through a symlink planted under the pcap's name): vnet
    opens the pcap (open_pcap) and tcpdump writes to it as its stdout, so the file grows
    under its name while the capture runs. Files of the capture (record, filter, log) go to
    work_dir, which must exist."""
    if point.interface is None:
        raise VnetError(f"{point.label} has no host-side interface to capture on")
    require_tcpdump()
    tag = f"capture-{os.getpid()}-{next(_serial)}"
    filter_file, record, log = (child(work_dir, f"{tag}{ext}") for ext in (".bpf", ".pid", ".log"))
    filter_file.write_text(bpf + "\n")
    log.unlink(missing_ok=True)
    opened, made = None, False
    if str(pcap) != "-":
        try:
            opened, made = open_pcap(Path(pcap))
        except VnetError:
            filter_file.unlink()
            raise
        stdout = opened
    argv = tcpdump_argv(point, "-", filter_file, count)
    began = time.monotonic()
    try:
        proc = procs.spawn(argv, record, str(filter_file), log_path=str(log), stdout=stdout)
    except BaseException:
        procs.stop(record)     # a Ctrl-C deferred until the record was written: it runs
        if made:
            Path(pcap).unlink(missing_ok=True)
        raise
    finally:
        if opened is not None:
            os.close(opened)       # tcpdump holds its own copy
    cap = Capture(point, str(pcap), record, filter_file, log, proc.pid, 0.0, proc)
    try:
        while LISTENING not in _read(log):
            if proc.poll() is not None:
                raise VnetError(f"tcpdump on {point.label} exited with status "
                                f"{proc.returncode}: {_last(log)}")
            if time.monotonic() - began > START_TIMEOUT:
                raise VnetError(f"tcpdump on {point.label} did not start listening within "
                                f"{START_TIMEOUT:g}s: {_last(log)}")
            time.sleep(0.01)
    except BaseException:
        cap.stop()
        if made:                      # nothing was captured: no pcap at all
            Path(pcap).unlink(missing_ok=True)
        raise
    cap.started_in = time.monotonic() - began
    return cap


def stop_recorded(lab_dir: Path, warn=None) -> None:
    """Stop every capture recorded in the lab's directory (start() writes capture-*.pid
    there): one whose vnet was killed mid-run would otherwise run on, on a bridge that may be
    the user's own."""
    for record in sorted(Path(lab_dir).glob("capture-*.pid")):
        procs.stop(record, warn)


def open_pcap(pcap: Path) -> tuple[int, bool]:
    """The pcap file, opened for tcpdump to write, and whether this made it: created, or an
    existing plain file emptied, or a FIFO the user named (a reader on the other end). A
    symlink under that name is refused (O_NOFOLLOW), and so is a file with other hard links
    (emptying it would empty them)."""
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            return os.open(pcap, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            fd = os.open(pcap, flags)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise VnetError(f"cannot write the pcap {pcap}: {why}") from None
    info = os.fstat(fd)
    if stat.S_ISFIFO(info.st_mode):
        return fd, False
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise VnetError(f"refusing to write the pcap {pcap}: it is not a plain file of its own "
                        "(another hard link, or a special file)")
    os.ftruncate(fd, 0)
    return fd, False


def _read(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _last(log: Path) -> str:
    lines = [ln for ln in _read(log).splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _stats(log: Path) -> dict:
    """tcpdump's closing lines: "N packets captured", "... received by filter", "... dropped
    by kernel"."""
    found = {}
    for line in _read(log).splitlines():
        words = line.split()
        if len(words) >= 3 and words[0].isdigit() and words[1] == "packets":
            found[" ".join(words[2:])] = int(words[0])
    return found

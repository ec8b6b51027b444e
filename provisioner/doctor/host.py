"""The facts doctor rules read, behind one small interface so tests can feed fake ones.

`Host` holds the context (backend, libvirt URI, sandbox, the target's network namespace, an
optional lab) and a few primitive reads; rules use nothing else. `SystemHost` reads this
machine: files under /proc, /sys, /etc and /dev, commands run in the target's network namespace
(`ip -j route`, `iptables -S FORWARD`, ...), libvirt-python, and vnet's accelerator verdict.
Every primitive is a read: none creates, starts or changes anything. (The one exception is
the accelerator probe, which boots the cached tiny image once under KVM, with no NIC, exactly
as the first `vnet up` would, and caches the verdict.)"""
from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from typing import Callable

from ..lab.model import Backend, Lab, Nic, Vm

SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


@dataclass(frozen=True)
class Output:
    rc: int
    stdout: str
    stderr: str


class Host:
    """Context plus primitive reads. Subclasses implement the primitives; the helpers below
    them are shared, so a fake host exercises the same parsing as the real one."""

    def __init__(self, backend: Backend | str = Backend.LIBVIRT, uri: str = "qemu:///system",
                 lab: Lab | None = None, sandbox: str | None = None, netns: str | None = None):
        self.backend = Backend(backend)
        self.uri = uri
        self.lab = lab
        self.sandbox = sandbox
        self.netns = netns

    # --- primitives ---------------------------------------------------------------------------

    def read(self, path: str) -> str | None:
        """A text file's content, or None when it cannot be read."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def listdir(self, path: str) -> list[str] | None:
        """Sorted names in a directory, or None when it does not exist."""
        raise NotImplementedError

    def which(self, name: str) -> str | None:
        raise NotImplementedError

    def run(self, argv: list[str], in_target: bool = True) -> Output | None:
        """Run a read-only command, in the target's network namespace when in_target; None
        when the program is not installed."""
        raise NotImplementedError

    def libvirt(self) -> dict:
        """{"ok": bool, "reason": "ok"|"no-socket"|"permission"|"no-module"|"refused",
        "error": str|None, "socket": str|None, "version": "9.0.0"|None}"""
        raise NotImplementedError

    def accel(self) -> dict | None:
        """vnet's accelerator verdict {"accel": "kvm"|"qemu", "detail", "source"}, or None when
        it has not been probed and cannot be (no guest image yet)."""
        raise NotImplementedError

    # --- helpers ------------------------------------------------------------------------------

    def modules(self) -> set[str] | None:
        """Loaded kernel modules, or None when /proc/modules is absent (no module support)."""
        text = self.read("/proc/modules")
        if text is None:
            return None
        return {line.split()[0] for line in text.splitlines() if line.strip()}

    def json_of(self, argv: list[str]) -> list | None:
        out = self.run(argv)
        if out is None or out.rc != 0:
            return None
        try:
            return json.loads(out.stdout or "[]")
        except ValueError:
            return None

    def sysctl(self, key: str) -> str | None:
        """A sysctl as the target's network namespace sees it (net.* are per namespace)."""
        out = self.run(["cat", "/proc/sys/" + key.replace(".", "/")])
        return out.stdout.strip() if out is not None and out.rc == 0 else None

    def lab_nics(self, model: str) -> list[tuple[Vm, Nic]]:
        if self.lab is None:
            return []
        return [(vm, nic) for vm in self.lab.vms for nic in vm.nics if nic.model == model]

    def namespace_missing(self) -> bool:
        """The target is a sandbox whose network namespace does not exist (it is not up)."""
        return bool(self.netns) and not self.exists(f"/run/netns/{self.netns}")

    def where(self) -> str:
        """Where the target's network facts live, for messages: "on this host" or
        "in sandbox NAME" (its host namespace)."""
        return f"in sandbox {self.sandbox}" if self.sandbox else "on this host"


class SystemHost(Host):
    """The real machine."""

    def __init__(self, *args, progress: Callable[[str], None] = lambda message: None, **kw):
        super().__init__(*args, **kw)
        self.progress = progress
        self._libvirt: dict | None = None

    def read(self, path: str) -> str | None:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str] | None:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return None

    def which(self, name: str) -> str | None:
        path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
        return shutil.which(name, path=path)

    def run(self, argv: list[str], in_target: bool = True) -> Output | None:
        from ..host import runner
        from ..errors import VnetError
        from ..host.netns import netns_argv, netns_inode

        program = self.which(argv[0])
        if program is None:
            return None
        full = [program, *argv[1:]]
        if in_target and self.netns:
            if netns_inode(self.netns) is None:
                return Output(1, "", f"network namespace {self.netns} does not exist")
            full = netns_argv(self.netns, full)
        try:
            result = runner.run(full, check=False, timeout=20, env={"LC_ALL": "C"})
        except VnetError as exc:
            return Output(1, "", exc.message)
        return Output(result.returncode, result.stdout, result.stderr)

    def libvirt(self) -> dict:
        if self._libvirt is None:
            self._libvirt = probe_libvirt(self.uri)
        return self._libvirt

    def accel(self) -> dict | None:
        from ..host import accel
        from ..guest import images

        forced = os.environ.get("VNET_ACCEL")
        if forced in ("kvm", "qemu"):
            return {"accel": forced, "detail": f"forced by VNET_ACCEL={forced}", "source": "env"}
        try:
            image = images.find_tiny()
        except Exception:  # noqa: BLE001 - no image cache is not a doctor failure
            image = None
        # This image's verdict, else any image's on this kernel: KVM either boots guests
        # here or not; a new image alone is no reason to boot one more probe.
        cached = accel.cached(image) or accel.cached(None)
        if cached:
            return dict(cached, source=f"cached in {cached['path']}")
        if image is None:
            return None
        self.progress("probing the accelerator: booting the tiny image once under KVM")
        accel.choose(image, self.progress)
        probed = accel.cached(image)
        return dict(probed, source="probed now") if probed else None


def local_sockets(uri: str) -> list[str] | None:
    """The unix sockets a local qemu URI connects to (the first that exists wins), or None
    for remote URIs. Checked before libvirt.open: opening a session URI whose daemon is not
    running would start one."""
    parts = urllib.parse.urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    if parts.netloc or transport not in ("", "unix"):
        return None
    query = dict(urllib.parse.parse_qsl(parts.query))
    if "socket" in query:
        return [query["socket"]]
    if parts.path.rstrip("/") == "/session":
        runtime = os.environ.get("XDG_RUNTIME_DIR") or os.path.expanduser("~/.cache")
        base = os.path.join(runtime, "libvirt")
    else:
        base = "/run/libvirt"
    return [os.path.join(base, "virtqemud-sock"), os.path.join(base, "libvirt-sock")]


def probe_libvirt(uri: str) -> dict:
    fact = {"ok": False, "reason": "refused", "error": None, "socket": None, "version": None}
    sockets = local_sockets(uri)
    if sockets is not None:
        present = [s for s in sockets if os.path.exists(s)]
        if not present:
            return dict(fact, reason="no-socket", socket=sockets[-1],
                        error=f"{' or '.join(sockets)} does not exist")
        fact["socket"] = present[0]
        if not os.access(present[0], os.R_OK | os.W_OK):
            return dict(fact, reason="permission", error=f"permission denied on {present[0]}")
    try:
        import libvirt
    except ImportError:
        return dict(fact, reason="no-module", error="libvirt-python is not installed")
    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        message = exc.get_error_message() or str(exc)
        reason = "permission" if "ermission denied" in message else "refused"
        return dict(fact, reason=reason, error=message)
    try:
        v = conn.getLibVersion()
        return dict(fact, ok=True, reason="ok",
                    version=f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}")
    finally:
        conn.close()

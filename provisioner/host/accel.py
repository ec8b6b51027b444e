"""Which accelerator really works here. /dev/kvm is not trusted until a guest has booted under
it (on some hosts KVM_CREATE_VM succeeds and guests then hang); the verdict is cached."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from . import locks, runner
from ..guest.cmdline import QEMU_PC_ARGS
from .paths import state_root

PROBE_TIMEOUT = 10.0      # the tiny image reaches userspace in ~4 s under TCG; KVM far less


def _cache_file() -> Path:
    return state_root() / "accel.json"


def _fingerprint(image) -> str:
    """The verdict holds while the host kernel and QEMU stay the same (not per image)."""
    import shutil

    qemu = shutil.which("qemu-system-x86_64") or ""
    return f"{os.uname().release}|{qemu}|{os.stat(qemu).st_mtime if qemu else 0}"


def choose(image, progress: Callable[[str], None] = print, force_probe: bool = False) -> str:
    """"kvm" when a KVM guest boots to userspace here, else "qemu" (TCG)."""
    override = os.environ.get("VNET_ACCEL")
    if override in ("kvm", "qemu"):
        return override
    cache = _cache_file()
    if cache.exists() and not force_probe:
        data = json.loads(cache.read_text())
        if data.get("fingerprint") == _fingerprint(image):
            return data["accel"]
    verdict, detail = probe(image)
    progress(f"accelerator: {verdict} ({detail}); cached in {cache}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    locks.write_atomic(cache, json.dumps({"accel": verdict, "detail": detail,   # runs at once
                                          "fingerprint": _fingerprint(image), "at": time.time()}))
    return verdict


def cached(image=None) -> dict | None:
    """The cached verdict, without probing: when its fingerprint matches (image given), or at
    least the host kernel does (image None). {"accel", "detail", "path", ...} or None.
    `vnet doctor` reads it."""
    cache = _cache_file()
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    fingerprint = str(data.get("fingerprint", ""))
    if image is not None and fingerprint != _fingerprint(image):
        return None
    if image is None and fingerprint.split("|")[0] != os.uname().release:
        return None
    return dict(data, path=str(cache)) if data.get("accel") in ("kvm", "qemu") else None


def probe(image) -> tuple[str, str]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "qemu", "no usable /dev/kvm: using TCG"
    ok, seconds = boot_once(image, "kvm")
    if ok:
        return "kvm", f"KVM guest booted in {seconds:.1f}s"
    return "qemu", (f"/dev/kvm exists but a KVM guest did not reach userspace within "
                    f"{PROBE_TIMEOUT:.0f}s: falling back to TCG (slower, but it works)")


def boot_once(image, accel: str, timeout: float = PROBE_TIMEOUT) -> tuple[bool, float]:
    """Boot the tiny image with vnet.probe=boot (no NIC at all) and wait for its marker."""
    qemu_accel = {"qemu": "tcg"}.get(accel, accel)     # libvirt's name -> QEMU's
    argv = ["qemu-system-x86_64", "-M", "pc", "-accel", qemu_accel, "-m", "128", "-nodefaults",
            "-no-user-config", "-display", "none", "-nic", "none", "-serial", "stdio",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", f"{image.cmdline_base} {QEMU_PC_ARGS} vnet.probe=boot"]
    start = time.monotonic()
    proc = runner.start(argv)
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        seen = b""
        while time.monotonic() - start < timeout and proc.poll() is None:
            chunk = proc.stdout.read() or b""
            seen += chunk
            if b"VNET-BOOTED" in seen:
                return True, time.monotonic() - start
            time.sleep(0.05)
        return b"VNET-BOOTED" in seen + (proc.stdout.read() or b""), time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

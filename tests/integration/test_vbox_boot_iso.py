"""The VirtualBox boot path, with QEMU acting like VirtualBox: no direct kernel boot.

BIOS (SeaBIOS) -> the VM's boot ISO on a SATA DVD (El Torito, isolinux from Debian) -> the
image's bzImage and initramfs with the VM's own command line -> the SATA/SCSI modules -> the
shared root disk on an AHCI controller (/dev/sda) -> VNET-ADDR and VNET-READY on the serial port.
The root disk uses `snapshot=on` where VirtualBox uses a multiattach differencing image: QEMU's
ide-hd refuses a `readonly=on` drive ("Block node is read-only"), and the base file stays
untouched either way. No host networking: SLIRP with restrict=on and no forwards. The QEMU is
killed by its PID.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.guest import bootiso, cmdline as guestcmdline, images

pytestmark = pytest.mark.integration
MAC = "52:54:00:12:34:56"
ADDRESS = "10.0.2.15/24"
BOOT_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def image():
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("apt-get", "apt"),
                          ("dpkg-deb", "dpkg"), ("mksquashfs", "squashfs-tools")):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install {package})")
    pytest.importorskip("pycdlib", reason="pycdlib is not installed (pip install pycdlib)")
    return images.build_tiny(progress=lambda line: print(f"  [image] {line}"))


@pytest.fixture(scope="module")
def pubkey(tmp_path_factory):
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is not installed (apt-get install openssh-client)")
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key.with_suffix(".pub").read_text().strip()


def boot(image, iso: Path, log: Path) -> tuple[str, float, str]:
    """Boot `iso` like VirtualBox would; (serial log, seconds to VNET-READY/ERROR, QEMU output)."""
    argv = ["qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "128", "-nographic",
            "-no-user-config", "-no-reboot", "-boot", "d", "-cdrom", str(iso),
            "-drive", f"file={image.rootdisk},if=none,id=r,format=raw,snapshot=on",
            "-device", "ahci,id=ahci", "-device", "ide-hd,drive=r,bus=ahci.0",
            "-netdev", "user,id=n0,restrict=on", "-device", f"e1000,netdev=n0,mac={MAC}",
            "-serial", f"file:{log}"]
    start = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        text = ""
        while time.monotonic() - start < BOOT_TIMEOUT:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "VNET-READY" in text or "VNET-ERROR" in text or qemu.poll() is not None:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - start
    finally:
        qemu.kill()                                   # only the QEMU this test started
        out, _ = qemu.communicate(timeout=30)
    return text.replace("\r", ""), elapsed, out.decode(errors="replace")


def cmdline(image, pubkey: str) -> str:
    return (f"{image.cmdline_base} vnet.host=vbox1 {guestcmdline.key_arg(pubkey)} "
            f"vnet.if={MAC},static,{ADDRESS},10.0.2.2")


def test_isolinux_boots_the_tiny_image_from_a_sata_root(image, pubkey, tmp_path):
    started = time.monotonic()
    iso = bootiso.build(image, cmdline(image, pubkey), tmp_path / "vbox1.boot.iso",
                        progress=lambda line: print(f"  [iso] {line}"))
    built = time.monotonic() - started
    root_before = image.rootdisk.stat().st_mtime_ns
    text, elapsed, out = boot(image, iso, tmp_path / "serial.log")
    print(f"\nTIMING boot ISO build: {built:.2f}s")
    print(f"TIMING BIOS -> isolinux -> kernel -> SATA root -> VNET-READY: {elapsed:.1f}s")
    detail = f"\n--- serial log ---\n{text[-3000:]}\n--- qemu ---\n{out}"
    assert "ISOLINUX" in text, "isolinux did not run" + detail
    assert "VNET-ERROR" not in text, detail
    assert f"VNET-ADDR {MAC} {ADDRESS} " in text, detail
    assert "VNET-READY vbox1" in text, detail
    assert image.rootdisk.stat().st_mtime_ns == root_before       # the shared root untouched


def test_without_the_sata_modules_the_root_is_not_found(image, pubkey, tmp_path):
    """Negative control: the same image, but the initramfs loads no SATA/SCSI module (a second
    cpio archive appended to initrd.gz replaces /lib/modules/order)."""
    loaded = json.loads((image.initrd.parent / "manifest.json").read_text())["modules"]
    sata = {"scsi_common", "scsi_mod", "libata", "libahci", "ahci", "sd_mod"}
    assert sata <= set(loaded)
    order = "".join(f"{m}\n" for m in loaded if m not in sata).encode()
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(image.initrd.read_bytes() + gzip.compress(
        images.cpio_newc([("lib/modules/order", 0o100644, order, 0)]), mtime=0))
    without = dataclasses.replace(image, initrd=initrd)
    iso = bootiso.build(without, cmdline(image, pubkey), tmp_path / "nosata.boot.iso")
    text, elapsed, out = boot(image, iso, tmp_path / "serial.log")
    assert "ISOLINUX" in text, text[-3000:] + out
    assert "VNET-ERROR no squashfs root disk" in text, text[-3000:] + out
    assert "VNET-READY" not in text

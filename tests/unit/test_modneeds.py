"""Modules the tiny guest loads only where needed (guest/modneeds.py): the SATA chain and
bonding with what only they need; nothing that an unconditional module needs."""
from provisioner.guest import modneeds

DEPS = {"ahci": ["libahci"], "libahci": ["libata"], "libata": ["scsi_mod"],
        "sd_mod": ["scsi_mod", "t10_pi"], "scsi_mod": ["scsi_common"], "t10_pi": ["crc64"],
        "bonding": ["tls"], "ext4": ["crc16", "jbd2"], "virtio_scsi": ["scsi_mod"]}
ORDER = ["crc16", "jbd2", "ext4", "scsi_common", "scsi_mod", "libata", "libahci", "ahci",
         "crc64", "t10_pi", "sd_mod", "tls", "bonding"]
ROOTS = ["ext4", "ahci", "sd_mod", "bonding"]
NEEDS = {"ahci": modneeds.AHCI, "sd_mod": modneeds.AHCI, "bonding": modneeds.BOND}


def test_the_sata_chain_and_bonding_are_conditional_with_their_own_dependencies():
    groups = modneeds.conditional(ROOTS, ORDER, lambda m: DEPS.get(m, []), NEEDS)
    assert groups == {modneeds.AHCI: ["scsi_common", "scsi_mod", "libata", "libahci", "ahci",
                                      "crc64", "t10_pi", "sd_mod"],
                      modneeds.BOND: ["tls", "bonding"]}


def test_a_dependency_of_an_unconditional_module_is_always_loaded():
    order = ORDER[:3] + ["scsi_common", "scsi_mod", "virtio_scsi"] + ORDER[5:]
    groups = modneeds.conditional(ROOTS + ["virtio_scsi"], order, lambda m: DEPS.get(m, []), NEEDS)
    assert "scsi_mod" not in groups[modneeds.AHCI] and "scsi_common" not in groups[modneeds.AHCI]
    assert "libata" in groups[modneeds.AHCI]


def test_the_needs_file_is_one_line_per_condition():
    assert modneeds.needs_file({"cmdline:vnet.bond=": ["tls", "bonding"]}) == \
        b"cmdline:vnet.bond= tls bonding\n"


def test_the_initramfs_carries_the_needs_file_and_its_init_reads_it(tmp_path):
    import gzip
    from pathlib import Path

    from provisioner.guest import images
    from .test_images import read_cpio

    needs = modneeds.needs_file({modneeds.BOND: ["tls", "bonding"]})
    from provisioner.guest import kernel
    kernel.initramfs(tmp_path / "initrd.gz", b"#!/bin/sh\n", b"busybox",
                     [("tls", b"k1"), ("bonding", b"k2")], needs)
    got = read_cpio(gzip.decompress((tmp_path / "initrd.gz").read_bytes()))
    assert got["lib/modules/needs"][1] == needs
    init = (Path(images.__file__).with_name("files") / "initramfs-init").read_text()
    assert "/lib/modules/needs" in init and 'case "$skip" in' in init
    assert kernel.MODULE_NEEDS["ahci"] == modneeds.AHCI and kernel.MODULE_NEEDS["bonding"] == modneeds.BOND


def run_insmod_loop(tmp_path, pci_classes, cmdline):
    """The initramfs init's module loop, run by sh on files under tmp_path, insmod replaced
    by echo: which modules it would load."""
    import re
    import subprocess
    from pathlib import Path

    from provisioner.guest import images

    init = (Path(images.__file__).with_name("files") / "initramfs-init").read_text()
    loop = init[init.index('skip=" "'):init.index("done < /lib/modules/order") + 25]
    for i, cls in enumerate(pci_classes):
        (tmp_path / f"sys/bus/pci/devices/0000:00:0{i}.0").mkdir(parents=True)
        (tmp_path / f"sys/bus/pci/devices/0000:00:0{i}.0/class").write_text(cls + "\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text(cmdline + "\n")
    (tmp_path / "lib/modules").mkdir(parents=True)
    (tmp_path / "lib/modules/needs").write_bytes(modneeds.needs_file(
        modneeds.conditional(ROOTS, ORDER, lambda m: DEPS.get(m, []), NEEDS)))
    (tmp_path / "lib/modules/order").write_text("".join(f"{m}\n" for m in ORDER))
    loop = re.sub(r"(?<![\w.])/(sys|proc|lib)/", lambda m: f"{tmp_path}/{m.group(1)}/", loop)
    loop = loop.replace('insmod "', 'echo "')
    out = subprocess.run(["sh", "-c", "set -f\n" + loop], capture_output=True, text=True,
                         check=True).stdout
    return [line.rsplit("/", 1)[1].removesuffix(".ko") for line in out.split()]


def test_a_virtio_guest_without_bonds_skips_the_sata_chain_and_bonding(tmp_path):
    loaded = run_insmod_loop(tmp_path, ["0x010000", "0x020000"], "console=ttyS0 vnet.host=vm1")
    assert loaded == ["crc16", "jbd2", "ext4"]


def test_a_sata_guest_with_a_bond_loads_them(tmp_path):
    loaded = run_insmod_loop(tmp_path, ["0x010601"], "vnet.host=vm1 vnet.bond=bond0,active-backup,a+b")
    assert loaded == ORDER

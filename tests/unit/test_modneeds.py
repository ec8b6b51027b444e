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


def run_insmod_loop(tmp_path, pci_classes, cmdline, order=ORDER, needs=None):
    """The initramfs init's module loop, run by sh on files under tmp_path, insmod replaced
    by echo: which modules it would load (of `order`, with the needs file `needs`; by default
    this file's tables)."""
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
    (tmp_path / "lib/modules/needs").write_bytes(needs or modneeds.needs_file(
        modneeds.conditional(ROOTS, ORDER, lambda m: DEPS.get(m, []), NEEDS)))
    (tmp_path / "lib/modules/order").write_text("".join(f"{m}\n" for m in order))
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


def test_the_tunnel_modules_load_only_on_a_vm_that_ends_a_tunnel(tmp_path):
    """The real tables (kernel.MODULE_NEEDS) through the real loop: every tunnel module and
    what only they need (wireguard's crypto, xfrm_algo, udp_tunnel...) wait for vnet.tunnel=1,
    which cmdline() puts on exactly the VMs that end a tunnel."""
    from provisioner.guest import kernel
    from provisioner.guest.cmdline import cmdline
    from provisioner.lab import loader

    deps = {"vxlan": ["udp_tunnel", "ip6_udp_tunnel"], "ip_gre": ["gre", "ip_tunnel"],
            "esp4": ["xfrm_algo"], "wireguard": ["libchacha20poly1305", "udp_tunnel"],
            "xfrm_user": ["xfrm_algo"], "ext4": ["crc16"]}
    order = ["crc16", "ext4", "udp_tunnel", "ip6_udp_tunnel", "vxlan", "gre", "ip_tunnel",
             "ip_gre", "xfrm_algo", "esp4", "authenc", "drbg", "echainiv", "xfrm_user",
             "xfrm_interface", "libchacha20poly1305", "wireguard"]
    groups = modneeds.conditional(["ext4", *kernel.TUNNEL_MODULES], order,
                                  lambda m: deps.get(m, []), kernel.MODULE_NEEDS)
    assert groups == {modneeds.TUNNEL: order[2:]}
    lab = loader.resolve({"name": "t", "networks": [{"name": "n", "mode": "hostonly"}],
                          "vms": [{"name": n, "nics": [{"network": "n"}]}
                                  for n in ("vm1", "vm2", "vm3")],
                          "tunnels": [{"name": "vx0", "type": "vxlan", "id": 42,
                                       "subnet": "10.99.0.0/24",
                                       "endpoints": [{"vm": "vm1"}, {"vm": "vm2"}]}]})
    lines = {vm.name: cmdline("BASE", lab, vm, "ssh-ed25519 AAAA c") for vm in lab.vms}
    assert [n for n, line in lines.items() if "vnet.tunnel=1" in line.split()] == ["vm1", "vm2"]
    needs = modneeds.needs_file(groups)
    for line, loaded in (("vnet.host=vm3", ["crc16", "ext4"]),
                         ("vnet.host=vm1 vnet.tunnel=1", order)):
        case = tmp_path / line.split("=")[1].split()[0]
        case.mkdir()
        assert run_insmod_loop(case, ["0x020000"], line, order, needs) == loaded

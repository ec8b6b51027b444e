"""Lab -> libvirt XML, with no I/O: the plan that `vnet render` prints and `vnet up` applies.

Mode mapping (why: each keeps the promise of its row in the mode table):
- natnetwork: one libvirt network, forward mode nat; port forwards by vnet's port proxy.
- nat:        QEMU user networking per NIC (its own private 10.0.2.0/24, host at 10.0.2.2, like
              VirtualBox NAT); port forwards are QEMU hostfwd rules added after start.
- hostonly:   a libvirt network with no <forward>, the host at .1 (libvirt isolates it).
- internal:   a libvirt network with a bridge and no <ip>: the host has no address there.
- bridged:    <interface type='bridge'> on an existing host bridge.
- management: every VM also gets a last NIC on the lab's isolated management network, used
              only by Ansible; probes are bound to the NIC under test (see verify.py).

Images: a `tiny` VM boots the shared kernel, initrd and read-only root (configured by its kernel
command line). A cloud-image VM boots from its own qcow2 overlay with a NoCloud seed ISO as a
SATA cdrom (configured by cloud-init). Both files sit in the lab's state dir (ctx.log_dir); the
renderer only computes their paths and the seed's data (plan.extra["cloud"]), `vnet up`
creates them (lifecycle.prepare_cloud).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import jinja2

from ...guest import cmdline as guestcmdline
from . import impair, placement
from ...lab import modes, nics
from ...guest.cloudimages import overlay_path, seed_path
from ...errors import Unsupported
from ...lab.model import Backend, CloudImage, Lab, Nic, Vm
from ...host.owner import PLACEHOLDER
from ...guest.seed import Seed, SeedNic
from ...resources import data_dir
from ..base import Document, LibvirtExtra, Plan
from ...lab.naming import bridge_name, mgmt_mac, mgmt_subnet_for, object_name  # noqa: F401

XMLNS = "https://vnet.dev/xmlns/lab/1"
MAX_NICS = 28          # PCI slots left on a -M pc guest after the disk and management NIC
MGMT_POOL = IPv4Network("100.64.0.0/16")
TB_CACHE_MIB = 48      # TCG translation cache, sized to the guest's code so it is not flushed:
# 2-VM natnetwork to green, alternated (round 8): 24 MiB flushed 10 times (boot + first verify)
# and cost each guest 5.4 CPU-s; 32: 5 flushes, 5.0; 40: 3, 4.9; 48: 2, 4.3 (-20%, wall -12%);
# 64: 1, 4.35. Each MiB is resident once the cache has cycled: 48 adds 27 MiB PSS per VM over
# 24 (8 VMs: 28 -> 54 MiB/VM beyond guest RAM, to green 13% sooner). QEMU's default (1 GiB
# here) grows RSS far past guest RAM for nothing; 16 MiB is 3x slower (it retranslates).

SEED_TABLE_BASE = 100    # a cloud VM's per-NIC routing tables: 100 + the NIC's index


@dataclass(frozen=True)
class ImageFiles:
    kernel: str
    initrd: str
    rootdisk: str
    cmdline_base: str = "console=ttyS0 quiet panic=-1"


@dataclass(frozen=True)
class Context:
    """What the machine decides, not the lab: paths, key, accelerator. The defaults render a
    readable dry-run before anything is built."""
    image: ImageFiles = ImageFiles(kernel="/var/cache/vnet/images/tiny/vmlinux",
                                   initrd="/var/cache/vnet/images/tiny/initrd.img",
                                   rootdisk="/var/cache/vnet/images/tiny/root.img")
    ssh_pubkey: str = "ssh-ed25519 GENERATED-AT-UP"
    owner: str = PLACEHOLDER      # the state root's id in every tag (provisioner/owner.py)
    accel: str = "qemu"
    log_dir: str = "/var/lib/vnet/labs/LAB"
    mgmt_subnet: IPv4Network | None = None
    extra: dict = field(default_factory=dict)
    host: str | None = None       # a multi-host lab: render the part on this host (lab.hosts)


class LibvirtRenderer:
    name = "libvirt"

    def __init__(self, context: Context = Context()):
        self.ctx = context
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(data_dir("templates") / "libvirt")),
            undefined=jinja2.StrictUndefined, autoescape=True,
            keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)

    def plan(self, lab: Lab) -> Plan:
        if lab.hosts and self.ctx.host is None:     # several hosts: every host's part
            return placement.whole(lab, lambda host: LibvirtRenderer(
                replace(self.ctx, host=host)).plan(lab))
        self._check(lab)
        impair.check(lab)          # a rate on a NIC without a tap: refused here (exit 2)
        mgmt = self.ctx.mgmt_subnet or mgmt_subnet_for(lab.name)
        # several hosts: only this host's part (drivers/libvirt/placement.py); else everything
        views = placement.networks_on(lab, self.ctx.host, self._networks(lab, mgmt))
        docs = [Document("network", n.libvirt_name, self._render("network.xml.j2", lab, net=n))
                for n in views]
        placed = [(i, vm) for i, vm in enumerate(lab.vms) if placement.runs_on(vm, self.ctx.host)]
        vms = [vm for _, vm in placed]
        domains = [self._domain(lab, vm, i, mgmt) for i, vm in placed]
        docs += [Document("domain", d["libvirt_name"],
                          self._render("domain.xml.j2", lab, dom=d, vm=vm))
                 for d, vm in zip(domains, vms)]
        extra: LibvirtExtra = {
            "cloud": {vm.name: d["cloud"] for vm, d in zip(vms, domains) if d["cloud"]},
            "hostfwd": self._hostfwds(lab),
            "proxies": self._proxies(lab),
            "mgmt": {vm.name: str(d["mgmt_ip"].ip) for vm, d in zip(vms, domains)},
            "mgmt_subnet": str(mgmt),
        }
        return Plan(Backend.LIBVIRT, lab, tuple(docs), extra=extra)

    # --- validation a lab file cannot express: what libvirt can realize ---------------------

    def _check(self, lab: Lab) -> None:
        for vm in lab.vms:
            if len(vm.nics) > MAX_NICS:
                raise Unsupported(f"vms.{vm.name}.nics: {len(vm.nics)} NICs, but the libvirt "
                                  f"backend allows at most {MAX_NICS} per VM")
            for k, nic in enumerate(vm.nics):
                net = lab.network(nic.network)
                refusal = modes.host_device_refusal(
                    nic.model, nics.NIC_MODELS[nic.model].needs_hardware, net.mode)
                if refusal:
                    raise Unsupported(f"vms.{vm.name}.nics[{k}].model: {refusal}")

    # --- networks ---------------------------------------------------------------------------

    def _networks(self, lab: Lab, mgmt: IPv4Network) -> list:
        result = []
        for net in lab.networks:
            for pf in sorted({nic.pf for _, nic in lab.nics_on(net.name) if nic.pf}):
                result.append(_NetView(   # a pool of this PF's virtual functions
                    name=net.name, mode=net.mode, bridge="", forward="hostdev", pf=pf,
                    libvirt_name=object_name(lab.name, f"{net.name}-{pf}"),
                    host_ip=None, prefix=None, dhcp=False))
            mode = modes.MODES[net.mode]
            if mode.libvirt_interface != "network":
                continue     # user-mode NICs and host bridges need no libvirt network
            if net.switch == "openvswitch":      # an Open vSwitch bridge vnet made (ovsbridge.py)
                result.append(_NetView(
                    name=net.name, mode=net.mode, libvirt_name=object_name(lab.name, net.name),
                    bridge=bridge_name(lab.name, net.name), forward="bridge", host_ip=None,
                    prefix=None, dhcp=False, virtualport="openvswitch"))
                continue
            forward = mode.libvirt_forward
            hosts = [{"mac": nic.mac, "name": vm.name, "ip": str(nic.ip.ip)}
                     for vm, nic in lab.nics_on(net.name) if nic.ip is not None]
            result.append(_NetView(
                name=net.name, mode=net.mode, libvirt_name=object_name(lab.name, net.name),
                bridge=bridge_name(lab.name, net.name), forward=forward,
                host_ip=str(net.host_ip) if net.host_ip else None,
                prefix=net.subnet.prefixlen if net.subnet else None, dhcp=net.dhcp,
                dhcp_start=_nth(net.subnet, net.subnet.num_addresses // 2) if net.subnet else None,
                dhcp_end=_nth(net.subnet, net.subnet.num_addresses - 2) if net.subnet else None,
                dhcp_hosts=hosts))
        result.append(_NetView(
            name="mgmt", mode="management", libvirt_name=object_name(lab.name, "mgmt"),
            bridge=bridge_name(lab.name, "mgmt"), forward=None,
            host_ip=str(mgmt.network_address + 1), prefix=mgmt.prefixlen, dhcp=False))
        return result

    # --- domains ----------------------------------------------------------------------------

    def _domain(self, lab: Lab, vm: Vm, index: int, mgmt: IPv4Network) -> dict:
        interfaces = [self._interface(lab, nic) for nic in vm.nics]
        mgmt_ip = IPv4Interface(f"{mgmt.network_address + 10 + index}/{mgmt.prefixlen}")
        interfaces.append({"type": "network", "source": object_name(lab.name, "mgmt"),
                           "mac": mgmt_mac(lab.name, vm.name), "model": "virtio"})
        base = f"{self.ctx.image.cmdline_base} {guestcmdline.QEMU_PC_ARGS}"
        cmdline = guestcmdline.cmdline(base, lab, vm, self.ctx.ssh_pubkey,
                                       management=f"{mgmt_mac(lab.name, vm.name)},static,{mgmt_ip}")
        return {"libvirt_name": object_name(lab.name, vm.name), "interfaces": interfaces,
                "cmdline": cmdline, "mgmt_ip": mgmt_ip, "qemu_args": qemu_args(interfaces),
                "serial_log": str(Path(self.ctx.log_dir) / f"{vm.name}.serial.log"),
                "cloud": self._cloud(lab, vm, mgmt_ip)}

    def _cloud(self, lab: Lab, vm: Vm, mgmt_ip: IPv4Interface) -> dict | None:
        """A cloud-image VM's overlay, seed ISO and seed data; None for the tiny image. The same
        address rules as _if_arg, except that only the first router becomes the default route."""
        if not isinstance(vm.image, CloudImage):
            return None
        seed_nics, gateway = [], None
        for k, nic in enumerate(vm.nics):
            net = lab.network(nic.network)
            route = net.router if (net.dhcp or nic.ip is not None) and gateway is None else None
            gateway = gateway or route
            seed_nics.append(SeedNic(
                mac=nic.mac, ifname=f"nic{k}", dhcp=net.dhcp,
                address=None if net.dhcp or nic.ip is None else str(nic.ip),
                gateway=str(route) if route else None, report=net.dhcp or nic.ip is not None,
                routes=tuple((str(r.destination), str(r.via)) for r in vm.routes
                             if net.subnet is not None and r.via in net.subnet),
                table=SEED_TABLE_BASE + k, subnet=str(net.subnet) if net.subnet else None,
                table_gateway=str(net.router) if net.router else None))
        seed_nics.append(SeedNic(mac=mgmt_mac(lab.name, vm.name), ifname="mgmt",
                                 address=str(mgmt_ip), table=SEED_TABLE_BASE + len(vm.nics),
                                 subnet=str(mgmt_ip.network)))
        return {"image": vm.image,
                "overlay": str(overlay_path(self.ctx.log_dir, vm.name)),
                "seed_iso": str(seed_path(self.ctx.log_dir, vm.name)),
                "seed": Seed(lab=lab.name, hostname=vm.name, ssh_pubkey=self.ctx.ssh_pubkey,
                             nics=tuple(seed_nics))}

    def _interface(self, lab: Lab, nic: Nic) -> dict:
        net = lab.network(nic.network)
        model = nics.NIC_MODELS[nic.model]
        if model.libvirt_interface == "hostdev":
            return {"type": "hostdev", "mac": nic.mac, "pci": _pci(nic.vf_address)} \
                if nic.vf_address else \
                {"type": "network", "mac": nic.mac, "model": None,
                 "source": object_name(lab.name, f"{net.name}-{nic.pf}")}
        if model.libvirt_interface == "vdpa":
            return {"type": "vdpa", "mac": nic.mac, "source": nic.device}
        interface = modes.MODES[net.mode].libvirt_interface
        if interface == "user":
            return {"type": "user", "mac": nic.mac, "model": model.libvirt_model}
        if interface == "bridge":
            return {"type": "bridge", "source": net.bridge, "mac": nic.mac,
                    "model": model.libvirt_model}
        return {"type": "network", "source": object_name(lab.name, net.name), "mac": nic.mac,
                "model": model.libvirt_model}

    _if_arg = staticmethod(guestcmdline.if_arg)   # one NIC's vnet.if (shared with VirtualBox)

    def _hostfwds(self, lab: Lab) -> list[dict]:
        """QEMU hostfwd rules for nat NICs. libvirt names the netdev of the k-th NIC hostnet<k>."""
        result = []
        for net in lab.networks:
            if modes.MODES[net.mode].host_forwards != "hostfwd":
                continue
            for pf in net.port_forwards:
                vm = lab.vm(pf.vm)
                k = next(i for i, nic in enumerate(vm.nics) if nic.network == net.name)
                result.append({"domain": object_name(lab.name, vm.name), "netdev": f"hostnet{k}",
                               "proto": pf.proto, "host_ip": str(pf.host_ip),
                               "host_port": pf.host_port, "guest_port": pf.guest_port,
                               "name": pf.name, "vm": pf.vm})
        return result

    def _proxies(self, lab: Lab) -> list[dict]:
        result = []
        for net in lab.networks:
            if modes.MODES[net.mode].host_forwards != "proxy":
                continue
            for pf in net.port_forwards:
                nic = next(n for n in lab.vm(pf.vm).nics if n.network == net.name)
                result.append({"name": pf.name, "vm": pf.vm, "proto": pf.proto,
                               "host_ip": str(pf.host_ip), "host_port": pf.host_port,
                               "guest_ip": str(nic.ip.ip), "guest_port": pf.guest_port})
        return result

    def _render(self, template: str, lab: Lab, **kw) -> str:
        return self.env.get_template(template).render(
            xmlns=XMLNS, lab_name=lab.name, owner=self.ctx.owner, accel=self.ctx.accel,
            image=self.ctx.image, tb_cache_mib=TB_CACHE_MIB, **kw)


def qemu_args(interfaces: list[dict]) -> list[str]:
    """QEMU options for what libvirt's domain elements cannot say (<qemu:override> could set
    one device's property, but only on libvirt 8.2 and later). QEMU's e1000 emulates link
    autonegotiation, and the guest saw the link about 2.5 s after its driver probed the NIC
    (a lab of e1000 NICs got its DHCP addresses 2-3 s later than virtio). With that
    emulation off the link is up at once, and `virsh domif-setlink` still takes it down
    and up. <qemu:commandline> exists in every libvirt vnet supports (since 0.8)."""
    if any(nic.get("model") == "e1000" for nic in interfaces):
        return ["-global", "e1000.autonegotiation=off"]
    return []


@dataclass(frozen=True)
class _NetView:
    name: str
    mode: str
    libvirt_name: str
    bridge: str
    forward: str | None
    host_ip: str | None
    prefix: int | None
    dhcp: bool
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    dhcp_hosts: list = field(default_factory=list)
    pf: str | None = None
    mtu: int | None = None        # a stretched network: the underlay's less VXLAN's overhead
    virtualport: str | None = None       # openvswitch: libvirt plugs guests in with ovs-vsctl


def _nth(subnet: IPv4Network, n: int) -> str:
    return str(subnet.network_address + n)


def _pci(address: str) -> dict:
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    return {"domain": domain, "bus": bus, "slot": slot, "function": function}

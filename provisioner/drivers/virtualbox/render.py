"""Lab -> VBoxManage argv lists, with no I/O: the plan that `vnet render` prints and `vnet up` runs.

One renderer covers VirtualBox 6.1 and 7.x: it emits the squashed option spellings both accept
(`--nictype1`, `--natpf1`, `--macaddress1`, ...), and adds the few 7.0-only things only where the
context's version has them. The syntax follows the VirtualBox manual's VBoxManage chapter
(https://www.virtualbox.org/manual/ch08.html: modifyvm, natnetwork, hostonlyif, dhcpserver) and
the VBoxManage sources (src/VBox/Frontends/VBoxManage/VBoxManageModifyVM.cpp).

Mode mapping (each keeps the promise of its row in the mode table):
- nat:        `--nicN nat` per VM NIC: its own NAT engine (guest 10.0.2.15, host 10.0.2.2);
              `--natpfN` for the port forwards of that VM; on 7.x `--natlocalhostreachableN on`,
              because 7.0 turned VM->host loopback off by default.
- natnetwork: `natnetwork add/modify/start` once, then `--nicN natnetwork --nat-networkN`.
- hostonly:   `hostonlyif create` + `ipconfig` (+ `dhcpserver add` when dhcp), then
              `--nicN hostonly --hostonlyadapterN`. On macOS hosts with 7.x, which have no
              host-only adapters: `hostonlynet add` and `--nicN hostonlynet --host-only-netN`.
- internal:   `--nicN intnet --intnetN vnet-<lab>-<net>`.
- bridged:    `--nicN bridged --bridgeadapterN <bridge>`.

Control path. Like libvirt's, every VM gets one extra, LAST NIC (so a lab VM has at most
MAX_NICS - 1 NICs of its own): virtio, MAC `lab.naming.mgmt_mac`, on a host-only interface
the lab owns (`hostonlyif create` + `ipconfig`, host at the first address of the context's
`mgmt_subnet`, no DHCP server; `hostonlynet add` on macOS 7.x). Guest i takes subnet+10+i
statically from its command line (`management=` of guestcmdline.cmdline); `plan.extra["mgmt"]`
maps VM -> that address, and Ansible reaches the guests there (vbox_exec.inventory). A lab
network overlapping `mgmt_subnet` is refused at plan time.

Booting the tiny image. VirtualBox has no direct kernel boot, so each VM gets its own small boot
ISO (provisioner/guest/bootiso.py: isolinux, the image's bzImage and initramfs, and the VM's kernel
command line) as a DVD on SATA port 1, and boots it first (`--boot1 dvd --boot2 disk`); the
shared root disk (VDI) stays on SATA port 0. The command line is what libvirt gives the same VM
(provisioner/guest/cmdline.py), with the VirtualBox management NIC's static address.
The renderer only names the ISOs (`<serial_dir>/<vm>.boot.iso`, the lab's state dir) and their
command lines (`plan.extra["boot"]`); the executor writes them before it runs the plan. With a
`seed_iso`, or for a cloud-image VM, the disk boots itself: no boot ISO then.

Placeholders. `VBoxManage hostonlyif create` takes no name: VirtualBox picks the next free
`vboxnetN` and prints it ("Interface 'vboxnet0' was successfully created"). Later argv therefore
carry the token `{hostonlyif:<network>}` (whole, or inside an element: `--interface={hostonlyif:ho}`).
The executor runs the commands in order; after the command at index i of
`plan.extra["captures"]` it reads the name from stdout with `created_interface()` and binds it to
the token `plan.extra["captures"][i]`; before running any argv it calls `substitute()`, which
raises if a token is still unbound. The same tokens appear in `plan.extra["teardown"]`; an
executor that lost the binding finds the interface again by its address,
`plan.extra["hostonlyifs"][net]["ip"]`, in `VBoxManage list hostonlyifs`.
"""
from __future__ import annotations

import shlex
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_network
from pathlib import PurePosixPath

from ...guest import cmdline as guestcmdline
from ...lab import modes, nics, openflow
from ...errors import Unsupported
from ...lab.model import Backend, CloudImage, Lab, Network, Nic, Vm
from ..base import Document, Plan, VBoxExtra
from .bandwidth import bandwidth_steps, check_impairment
from .context import (  # noqa: F401  (names other modules and the tests take from here)
    NETWORKS_CONF, OWNER_KEY, TAG_KEY, VBoxContext, boot_iso_path, created_interface,
    hostonlyif_token, substitute, vbox_mac, vbox_name, vm_uuid)
from ...lab.naming import mgmt_mac

VBOXMANAGE = "VBoxManage"
MAX_NICS = 8                      # --nic1..--nic8 (PIIX3 chipset); the last is vnet's own
MGMT_NETWORK = "_mgmt"            # the management network's key: no lab network name has '_'
MGMT_GUEST_OFFSET = 10            # guest i: mgmt_subnet + 10 + i (as on libvirt)
OSTYPE = "Linux26_64"
CONTROLLER = "SATA"
HOSTONLY_RESTRICTED_SINCE = (6, 1, 28)      # host-only addresses limited to networks.conf
HOSTONLY_RESTRICTED_HOSTS = ("linux", "darwin", "solaris")
DHCP_SERVER_OFFSET = 2            # the host is subnet+1; VirtualBox's DHCP server sits at +2
DHCP_LOWER_OFFSET = 100           # lease pool: subnet+100 (or the upper half) to broadcast-1


def static_on_virtualbox() -> frozenset[str]:
    """The modes whose guests take their planned addresses statically on VirtualBox (its DHCP
    server for them cannot reserve one per MAC): Mode.vbox_static_addresses."""
    return frozenset(m.name for m in modes.MODES.values() if m.vbox_static_addresses)


class VirtualBoxRenderer:
    name = "virtualbox"

    def __init__(self, context: VBoxContext = VBoxContext()):
        self.ctx = context

    def plan(self, lab: Lab) -> Plan:
        self._check(lab)
        mgmt = self._mgmt_network()
        networks = (*lab.networks, mgmt)
        steps: list[tuple[str, tuple[str, ...]]] = []
        captures: dict[int, str] = {}
        for net in networks:
            for label, argv in self._network(lab, net):
                if argv[1:] == ("hostonlyif", "create"):
                    captures[len(steps)] = hostonlyif_token(net.name)
                steps.append((label, argv))
        for i, vm in enumerate(lab.vms):
            steps += self._vm(lab, vm, i)
        for net in lab.networks:
            steps += self._dhcp_server(lab, net)
        steps += [(f"vm {vm.name}: startvm", _vbm("startvm", vbox_name(lab.name, vm.name),
                                                   "--type", "headless")) for vm in lab.vms]
        docs = tuple(Document("command", label, shlex.join(argv)) for label, argv in steps)
        extra: VBoxExtra = {
            "teardown": self._teardown(lab, networks),
            "tag": {"key": TAG_KEY, "value": lab.name,
                    "owner_key": OWNER_KEY, "owner": self.ctx.owner},
            "captures": captures,
            "hostonlyifs": {n.name: {"token": hostonlyif_token(n.name),
                                     "ip": str(n.host_ip),
                                     "netmask": str(n.subnet.netmask)}
                            for n in networks if self._uses_hostonlyif(n)},
            "mgmt": {vm.name: str(self._mgmt_ip(i).ip)
                     for i, vm in enumerate(lab.vms)},
            "mgmt_subnet": str(mgmt.subnet),
            "mgmt_host_ip": str(mgmt.host_ip),
            "vms": {vm.name: vbox_name(lab.name, vm.name) for vm in lab.vms},
            "boot": {vm.name: self._boot(lab, vm, i)
                     for i, vm in enumerate(lab.vms) if self._boots_iso(vm)},
            "version": ".".join(map(str, self.ctx.version)),
        }
        return Plan(Backend.VIRTUALBOX, lab, docs, commands=tuple(argv for _, argv in steps),
                    extra=extra)

    # --- what a valid lab can still ask for that VirtualBox cannot do -----------------------

    def _check(self, lab: Lab) -> None:
        if lab.hosts:
            raise Unsupported("hosts: VirtualBox has no remote API in vnet, so its labs run on "
                              "this machine only; run a lab with hosts: on --backend libvirt")
        models = sorted(nics.names(Backend.VIRTUALBOX), key=lambda m: (m != "virtio", m))
        for vm in lab.vms:
            if isinstance(vm.image, CloudImage) and self.ctx.seed_iso is None:
                raise Unsupported(f"vms.{vm.name}.image: cloud images run on the libvirt "
                                  "backend for now; on VirtualBox use image: tiny")
            if len(vm.nics) > MAX_NICS - 1:
                raise Unsupported(f"vms.{vm.name}.nics: {len(vm.nics)} NICs, but VirtualBox "
                                  f"allows at most {MAX_NICS} per VM (--nic1 to --nic{MAX_NICS}) "
                                  f"and the last slot is vnet's management NIC: at most "
                                  f"{MAX_NICS - 1} lab NICs")
            for k, nic in enumerate(vm.nics):
                check_impairment(vm, k, nic)
                model = nics.NIC_MODELS[nic.model]
                if model.virtualbox_type is None:
                    raise Unsupported(
                        f"vms.{vm.name}.nics[{k}].model: VirtualBox cannot attach {nic.model} "
                        f"NICs (it has no attachment for an SR-IOV VF or a vDPA device); "
                        f"VirtualBox supports NIC models: {', '.join(models)}")
        openflow.refuse_on_virtualbox(lab)
        mgmt = self._mgmt_network().subnet
        if mgmt.num_addresses < MGMT_GUEST_OFFSET + len(lab.vms) + 1:
            raise Unsupported(f"mgmt_subnet: {mgmt} (VBoxContext) is too small for "
                              f"{len(lab.vms)} VMs at +{MGMT_GUEST_OFFSET} and up")
        for net in lab.networks:
            if _adapter(net) == "hostonly" and net.subnet is not None and net.subnet.overlaps(mgmt):
                raise Unsupported(f"networks.{net.name}.subnet: {net.subnet} overlaps vnet's "
                                  f"VirtualBox management network {mgmt} (VBoxContext "
                                  f"mgmt_subnet); use another subnet")
        restricted = (self.ctx.version >= HOSTONLY_RESTRICTED_SINCE
                      and self.ctx.host_os in HOSTONLY_RESTRICTED_HOSTS)
        allowed = [ip_network(r, strict=False) for r in self.ctx.hostonly_ranges]
        if restricted and not any(mgmt.subnet_of(r) for r in allowed if r.version == 4):
            raise Unsupported(
                f"mgmt_subnet: vnet's management network {mgmt} is "
                f"outside the host-only ranges VirtualBox {_dotted(self.ctx.version)} allows "
                f"({', '.join(self.ctx.hostonly_ranges) or 'none'}); allow it in "
                f"{NETWORKS_CONF} (e.g. '* {mgmt}')")
        for net in lab.networks:
            if _adapter(net) != "hostonly" or not restricted:
                continue
            if not any(net.subnet.subnet_of(r) for r in allowed if r.version == 4):
                ranges = ", ".join(self.ctx.hostonly_ranges) or "none"
                raise Unsupported(
                    f"networks.{net.name}.subnet: {net.subnet} is outside the host-only ranges "
                    f"VirtualBox {_dotted(self.ctx.version)} allows ({ranges}); use a subnet "
                    f"inside them, or allow it in {NETWORKS_CONF} (e.g. '* {net.subnet}')")

    # --- networks ---------------------------------------------------------------------------

    def _mgmt_network(self) -> Network:
        """The control path: a host-only network the lab owns, host at subnet+1, no DHCP."""
        subnet = ip_network(self.ctx.mgmt_subnet)
        return Network(name=MGMT_NETWORK, mode="hostonly", subnet=subnet, dhcp=False,
                       host_ip=subnet.network_address + 1)

    def _mgmt_ip(self, index: int) -> IPv4Interface:
        subnet = ip_network(self.ctx.mgmt_subnet)
        return IPv4Interface(f"{subnet.network_address + MGMT_GUEST_OFFSET + index}/"
                             f"{subnet.prefixlen}")

    def _uses_hostonlynet(self, net: Network) -> bool:
        """macOS hosts with 7.x have host-only networks (vmnet), not host-only adapters."""
        return (_adapter(net) == "hostonly" and self.ctx.host_os == "darwin"
                and self.ctx.version >= (7, 0, 0))

    def _uses_hostonlyif(self, net: Network) -> bool:
        return _adapter(net) == "hostonly" and not self._uses_hostonlynet(net)

    def _network(self, lab: Lab, net: Network) -> list[tuple[str, tuple[str, ...]]]:
        name = vbox_name(lab.name, net.name)
        label = f"network {net.name}"
        if _adapter(net) == "natnetwork":
            steps = [(f"{label}: natnetwork add", _vbm(
                "natnetwork", "add", "--netname", name, "--network", str(net.subnet),
                "--enable", "--dhcp", "on" if net.dhcp else "off"))]
            for pf in net.port_forwards:
                guest = next(n for n in lab.vm(pf.vm).nics if n.network == net.name)
                rule = (f"{pf.name}:{pf.proto}:[{pf.host_ip}]:{pf.host_port}:"
                        f"[{guest.ip.ip}]:{pf.guest_port}")
                steps.append((f"{label}: port forward {pf.name}", _vbm(
                    "natnetwork", "modify", "--netname", name, "--port-forward-4", rule)))
            steps.append((f"{label}: natnetwork start",
                          _vbm("natnetwork", "start", "--netname", name)))
            return steps
        if self._uses_hostonlynet(net):
            lower, upper = _hostonlynet_range(net)
            return [(f"{label}: hostonlynet add", _vbm(
                "hostonlynet", "add", f"--name={name}", f"--netmask={net.subnet.netmask}",
                f"--lower-ip={lower}", f"--upper-ip={upper}", "--enable"))]
        if _adapter(net) == "hostonly":
            token = hostonlyif_token(net.name)
            return [(f"{label}: hostonlyif create", _vbm("hostonlyif", "create")),
                    (f"{label}: hostonlyif ipconfig", _vbm(
                        "hostonlyif", "ipconfig", token, "--ip", str(net.host_ip),
                        "--netmask", str(net.subnet.netmask)))]
        return []            # nat, internal, bridged: nothing exists outside the VMs

    def _dhcp_server(self, lab: Lab, net: Network) -> list[tuple[str, tuple[str, ...]]]:
        """After the VMs exist: each NIC's lease is pinned to its model address with
        --vm/--nic/--fixed-address, which VirtualBox resolves against registered VMs."""
        if not (self._uses_hostonlyif(net) and net.dhcp):
            return []
        server, lower, upper = _dhcp_addresses(lab, net)
        argv = ["dhcpserver", "add", f"--interface={hostonlyif_token(net.name)}",
                f"--server-ip={server}", f"--netmask={net.subnet.netmask}",
                f"--lower-ip={lower}", f"--upper-ip={upper}", "--enable"]
        for vm in lab.vms:
            for k, nic in enumerate(vm.nics):
                if nic.network == net.name and nic.ip is not None:
                    argv += [f"--vm={vbox_name(lab.name, vm.name)}", f"--nic={k + 1}",
                             f"--fixed-address={nic.ip.ip}"]
        return [(f"network {net.name}: dhcpserver add", _vbm(*argv))]

    # --- VMs --------------------------------------------------------------------------------

    def _boots_iso(self, vm: Vm) -> bool:
        """The tiny image boots from a per-VM ISO; a cloud image (or a disk with a seed) from
        its disk."""
        return self.ctx.seed_iso is None and not isinstance(vm.image, CloudImage)

    def _boot(self, lab: Lab, vm: Vm, index: int) -> dict:
        """The VM's boot ISO and the kernel command line in its isolinux.cfg: libvirt's
        <cmdline> for the same VM, management NIC included."""
        management = f"{mgmt_mac(lab.name, vm.name)},static,{self._mgmt_ip(index)}"
        return {"iso": boot_iso_path(self.ctx.serial_dir, vm.name),
                "cmdline": guestcmdline.cmdline(self.ctx.cmdline_base, lab, vm,
                                                self.ctx.ssh_pubkey, management=management,
                                                static_modes=static_on_virtualbox())}

    def _vm(self, lab: Lab, vm: Vm, index: int) -> list[tuple[str, tuple[str, ...]]]:
        name, label = vbox_name(lab.name, vm.name), f"vm {vm.name}"
        create = ["createvm", "--name", name, "--ostype", OSTYPE, "--register", "--uuid",
                  vm_uuid(self.ctx.owner, lab.name, vm.name)]
        if self.ctx.basefolder:
            create += ["--basefolder", self.ctx.basefolder]
        serial = str(PurePosixPath(self.ctx.serial_dir) / f"{vm.name}.serial.log")
        order = ("dvd", "disk") if self._boots_iso(vm) else ("disk", "dvd")
        steps = [
            (f"{label}: createvm", _vbm(*create)),
            (f"{label}: tag", _vbm("setextradata", name, TAG_KEY, lab.name)),
            (f"{label}: owner", _vbm("setextradata", name, OWNER_KEY, self.ctx.owner)),
            (f"{label}: hardware", _vbm(
                "modifyvm", name, "--memory", str(vm.memory), "--cpus", str(vm.cpus),
                "--boot1", order[0], "--boot2", order[1], "--boot3", "none", "--boot4", "none",
                "--uart1", "0x3F8", "4", "--uartmode1", "file", serial)),
        ]
        steps += [(f"{label}: nic{k + 1} on {nic.network}", _vbm("modifyvm", name,
                                                                 *self._nic(lab, vm, nic, k + 1)))
                  for k, nic in enumerate(vm.nics)]
        steps += bandwidth_steps(name, label, vm, _vbm)
        steps.append((f"{label}: nic{len(vm.nics) + 1} management",
                      _vbm("modifyvm", name, *self._mgmt_nic(lab, vm, len(vm.nics) + 1))))
        disk = self.ctx.disk.replace("{vm}", vm.name)
        attach_disk = ["storageattach", name, "--storagectl", CONTROLLER, "--port", "0",
                       "--device", "0", "--type", "hdd", "--medium", disk]
        if "{vm}" not in self.ctx.disk:
            attach_disk += ["--mtype", "multiattach"]
        steps += [
            (f"{label}: storagectl", _vbm("storagectl", name, "--name", CONTROLLER, "--add",
                                          "sata", "--controller", "IntelAhci", "--portcount", "2")),
            (f"{label}: disk", _vbm(*attach_disk)),
        ]
        if self._boots_iso(vm):
            steps.append((f"{label}: boot iso", _vbm(
                "storageattach", name, "--storagectl", CONTROLLER, "--port", "1", "--device", "0",
                "--type", "dvddrive", "--medium", boot_iso_path(self.ctx.serial_dir, vm.name))))
        elif self.ctx.seed_iso:
            steps.append((f"{label}: seed", _vbm(
                "storageattach", name, "--storagectl", CONTROLLER, "--port", "1", "--device", "0",
                "--type", "dvddrive", "--medium", self.ctx.seed_iso.replace("{vm}", vm.name))))
        return steps

    def _nic(self, lab: Lab, vm: Vm, nic: Nic, n: int) -> list[str]:
        net = lab.network(nic.network)
        adapter = _adapter(net)
        attach = {"natnetwork": ("--nat-network", vbox_name(lab.name, net.name)),
                  "hostonly": ("--hostonlyadapter", hostonlyif_token(net.name)),
                  "intnet": ("--intnet", vbox_name(lab.name, net.name)),
                  "bridged": ("--bridgeadapter", net.bridge)}
        if self._uses_hostonlynet(net):
            args = [f"--nic{n}", "hostonlynet", f"--host-only-net{n}",
                    vbox_name(lab.name, net.name)]
        elif adapter == "nat":
            args = [f"--nic{n}", "nat"]
        elif adapter in attach:
            option, value = attach[adapter]
            args = [f"--nic{n}", adapter, f"{option}{n}", value]
        else:    # a mode added to provisioner/lab/modes without its vbox_adapter
            raise Unsupported(f"networks.{net.name}.mode: the VirtualBox renderer does not know "
                              f"mode {net.mode!r}")
        args += [f"--nictype{n}", nics.NIC_MODELS[nic.model].virtualbox_type,
                 f"--macaddress{n}", vbox_mac(nic.mac), f"--cableconnected{n}", "on"]
        if modes.MODES[net.mode].per_vm_nat:
            if self.ctx.version >= (7, 0, 0):
                args += [f"--natlocalhostreachable{n}", "on"]
            first = next(i for i, other in enumerate(vm.nics) if other.network == net.name)
            if first + 1 == n:      # forwards go to the VM's first NIC on that network
                for pf in net.port_forwards:
                    if pf.vm == vm.name:
                        args += [f"--natpf{n}", f"{pf.name},{pf.proto},{pf.host_ip},"
                                                f"{pf.host_port},,{pf.guest_port}"]
        return args

    def _mgmt_nic(self, lab: Lab, vm: Vm, n: int) -> list[str]:
        """The last NIC: virtio on the management network, libvirt's management MAC."""
        mgmt = self._mgmt_network()
        if self._uses_hostonlynet(mgmt):
            args = [f"--nic{n}", "hostonlynet", f"--host-only-net{n}",
                    vbox_name(lab.name, mgmt.name)]
        else:
            args = [f"--nic{n}", "hostonly", f"--hostonlyadapter{n}",
                    hostonlyif_token(mgmt.name)]
        return args + [f"--nictype{n}", nics.NIC_MODELS["virtio"].virtualbox_type,
                       f"--macaddress{n}", vbox_mac(mgmt_mac(lab.name, vm.name)),
                       f"--cableconnected{n}", "on"]

    # --- teardown: ordered, and tolerant in the executor ("not found" is fine) --------------

    def _teardown(self, lab: Lab, networks: tuple[Network, ...]) -> list[tuple[str, ...]]:
        vms = [vbox_name(lab.name, vm.name) for vm in lab.vms]
        steps = [_vbm("controlvm", vm, "poweroff") for vm in vms]
        steps += [_vbm("unregistervm", vm, "--delete") for vm in vms]
        for net in networks:
            name = vbox_name(lab.name, net.name)
            if self._uses_hostonlyif(net):
                token = hostonlyif_token(net.name)
                if net.dhcp:
                    steps.append(_vbm("dhcpserver", "remove", f"--interface={token}"))
                steps.append(_vbm("hostonlyif", "remove", token))
            elif self._uses_hostonlynet(net):
                steps.append(_vbm("hostonlynet", "remove", f"--name={name}"))
            elif _adapter(net) == "natnetwork":
                steps += [_vbm("natnetwork", "stop", "--netname", name),
                          _vbm("natnetwork", "remove", "--netname", name)]
        return steps



def _adapter(net: Network) -> str:
    """How VirtualBox attaches a NIC of this network's mode (the mode's data, lab/modes/)."""
    mode = modes.MODES.get(net.mode)
    return mode.vbox_adapter if mode else ""


def _vbm(*args: str) -> tuple[str, ...]:
    return (VBOXMANAGE, *args)


def _dotted(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def _dhcp_addresses(lab: Lab, net: Network) -> tuple[IPv4Address, IPv4Address, IPv4Address]:
    """Server at subnet+2 (stepping past addresses NICs use), leases from subnet+100 (or the
    upper half of a small subnet) to broadcast-1."""
    subnet: IPv4Network = net.subnet
    used = {nic.ip.ip for _, nic in lab.nics_on(net.name) if nic.ip is not None}
    lower = subnet.network_address + min(DHCP_LOWER_OFFSET, subnet.num_addresses // 2)
    server = subnet.network_address + DHCP_SERVER_OFFSET
    while server in used or server == net.host_ip:
        server += 1
    return server, lower, subnet.broadcast_address - 1


def _hostonlynet_range(net: Network) -> tuple[IPv4Address, IPv4Address]:
    """vmnet gives the host the lower IP and leases the rest up to the (inclusive) upper IP."""
    return net.host_ip, net.subnet.broadcast_address - 1

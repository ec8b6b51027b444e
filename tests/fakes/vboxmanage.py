#!/usr/bin/env python3
"""A FAKE VBoxManage for vnet's tests. This is NOT VirtualBox: it runs no VM and touches no
network; it only keeps a JSON picture of what VirtualBox would hold, so tests can run every
command vnet renders and see the ones VirtualBox would refuse.

It emulates the subcommands vnet uses: createvm, setextradata/getextradata, modifyvm,
storagectl, storageattach, startvm, controlvm (poweroff, acpipowerbutton), unregistervm,
showvminfo, list (vms, runningvms, natnets, hostonlyifs, hostonlynets, dhcpservers, bridgedifs),
natnetwork, hostonlyif, hostonlynet, dhcpserver, guestproperty get/enumerate, import (an OVF,
read by vbox_ovf.py beside this file), and --version.
Anything else, any unknown option, bad enum value, malformed MAC, missing object, duplicate VM,
NIC index outside 1..8 or host-only address outside the allowed ranges is refused the way
VBoxManage refuses it: "VBoxManage: error: ..." on stderr, exit 2 for syntax, 1 for the rest.
It is stricter than VirtualBox in one place: modifyvm already refuses a NAT network or host-only
adapter that does not exist (VirtualBox notices only at startvm), so a placeholder vnet forgot to
substitute fails at the line that carries it.

Options parse like IPRT RTGetOpt: `--opt value` and `--opt=value`; per-NIC options are a name
plus an index (`--nictype1`, `--nic-type1`); 7.x-only spellings are unknown on 6.x, and the
host-only network options exist only on macOS hosts with 7.x.

Environment:
  VBOX_FAKE_STATE           the JSON state file (required; created when missing)
  VBOX_FAKE_VERSION         what --version prints and which rules apply (7.0.20r163906)
  VBOX_FAKE_HOST_OS         linux | darwin | windows | solaris (linux)
  VBOX_FAKE_NETWORKS_CONF   /etc/vbox/networks.conf stand-in: a file path, or its text inline
                            ("* 10.0.0.0/8 192.168.0.0/16"); unset: VirtualBox's default range
  VBOX_FAKE_BRIDGEDIFS      host interfaces bridged NICs may use at startvm (br0,eth0)
Run with --fake-info to see the settings.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import uuid

SYNTAX, FAILURE = 2, 1
MAX_NICS = 8
# libpcap's global header (magic, 2.4, no zone, snaplen 65535, Ethernet): an empty trace
PCAP_HEADER = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
DEFAULT_HOSTONLY = ("192.168.56.0/21",)
NOT_FOUND = "Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001), component VirtualBoxWrap, " \
            "interface IVirtualBox"
ATTACHMENTS = ("none", "null", "nat", "bridged", "hostif", "intnet", "hostonly", "hostonlynet",
               "generic", "natnetwork")
NIC_TYPES = ("Am79C970A", "Am79C973", "Am79C960", "82540EM", "82543GC", "82545EM", "virtio",
             "NE1000", "NE2000", "WD8003", "WD8013", "3C503", "3C501")
BOOT = ("none", "floppy", "dvd", "disk", "net")
OSTYPES = ("Linux26", "Linux26_64", "Linux_64", "Ubuntu_64", "Debian_64", "Fedora_64",
           "RedHat_64", "ArchLinux_64", "Other", "Other_64")
BUSES = {"sata": ("IntelAhci",), "ide": ("PIIX3", "PIIX4", "ICH6"), "scsi": ("LsiLogic", "BusLogic"),
         "sas": ("LsiLogicSas",), "pcie": ("NVMe",), "virtio": ("VirtIO",), "floppy": ("I82078",),
         "usb": ("USB",)}
MEDIUM_TYPES = {"hdd": (".vdi", ".vmdk", ".vhd"), "dvddrive": (".iso",), "fdd": (".img",)}
MTYPES = ("normal", "writethrough", "immutable", "shareable", "readonly", "multiattach")
SHARABLE = ("immutable", "shareable", "readonly", "multiattach")
START_TYPES = ("gui", "headless", "sdl", "separate")
PROGRESS = "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%"


class Fail(Exception):
    def __init__(self, *lines: str, code: int = FAILURE):
        super().__init__(lines[0])
        self.lines, self.code = lines, code


def syntax(message: str) -> Fail:
    return Fail(message, code=SYNTAX)


# --- environment ------------------------------------------------------------------------------

def version_string() -> str:
    return os.environ.get("VBOX_FAKE_VERSION", "7.0.20r163906")


def version() -> tuple[int, int, int]:
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)", version_string())
    if not match:
        raise Fail(f"VBOX_FAKE_VERSION {version_string()!r} is not like 7.0.20r163906")
    return tuple(int(x) for x in match.groups())


def host_os() -> str:
    return os.environ.get("VBOX_FAKE_HOST_OS", "linux")


def has_vmnet() -> bool:
    """Host-only networks (VBOX_WITH_VMNET) exist only in 7.x builds for macOS."""
    return host_os() == "darwin" and version() >= (7, 0, 0)


def allowed_hostonly() -> list | None:
    """The ranges host-only addresses must fall in, or None when nothing restricts them."""
    if version() < (6, 1, 28) or host_os() not in ("linux", "darwin", "solaris"):
        return None
    conf = os.environ.get("VBOX_FAKE_NETWORKS_CONF")
    if conf is None:
        return [ipaddress.ip_network(r) for r in DEFAULT_HOSTONLY]
    text = open(conf).read() if os.path.isfile(conf) else conf
    ranges = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == "*":
            ranges += [ipaddress.ip_network(w, strict=False) for w in words[1:]]
    return ranges


def check_hostonly_ip(ip: str, context: str) -> None:
    allowed = allowed_hostonly()
    address = ipaddress.ip_address(ip)
    if allowed is not None and not any(address in r for r in allowed if r.version == 4):
        ranges = ", ".join(map(str, allowed)) or "none (networks.conf is empty)"
        raise Fail("Code E_ACCESSDENIED (0x80070005) - Access denied (extended info not available)",
                   f"Context: \"{context}\"",
                   f"(fake: {ip} is outside the allowed host-only ranges: {ranges}; "
                   f"see /etc/vbox/networks.conf)")


# --- state ------------------------------------------------------------------------------------

def empty_state() -> dict:
    return {"vms": {}, "natnets": {}, "hostonlyifs": {}, "hostonlynets": {}, "dhcpservers": {}}


def state_path() -> str:
    path = os.environ.get("VBOX_FAKE_STATE")
    if not path:
        raise Fail("VBOX_FAKE_STATE is not set: this test stand-in keeps its state in that file")
    return path


def load_state() -> dict:
    try:
        with open(state_path()) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return empty_state()


def save_state(state: dict) -> None:
    tmp = state_path() + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=1, sort_keys=True)
    os.replace(tmp, state_path())


def find_vm(state: dict, ref: str) -> dict:
    for vm in state["vms"].values():
        if ref in (vm["name"], vm["uuid"]):
            return vm
    raise Fail(f"Could not find a registered machine named '{ref}'", NOT_FOUND)


def unlocked(vm: dict) -> dict:
    if vm["state"] == "running":
        raise Fail(f"The machine '{vm['name']}' is already locked for a session (or being "
                   f"unlocked)", "Details: code VBOX_E_INVALID_OBJECT_STATE (0x80bb0007)")
    return vm


# --- option parsing (RTGetOpt-like) -----------------------------------------------------------

class Opt:
    """nargs: values taken (an int, or a function of the first value); index: (low, high) for
    options that carry an index; since: first version; vmnet: only with host-only networks."""

    def __init__(self, key, nargs=1, index=None, since=(0, 0, 0), vmnet=False, what=None):
        self.key, self.nargs, self.index, self.since, self.vmnet = key, nargs, index, since, vmnet
        self.what = what or key


def parse(args: list[str], spec: dict[str, Opt]) -> tuple[list[str], list[tuple]]:
    """-> (positionals, [(key, index, [values])]) in command-line order."""
    positionals, options = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        opt, index = spec.get(name), None
        if opt is not None and opt.index is not None:
            opt = None                          # indexed options need their index
        if opt is None:
            match = re.match(r"^(--[a-z][a-z-]*?)(\d+)$", name)
            if match and match.group(1) in spec and spec[match.group(1)].index is not None:
                opt, index = spec[match.group(1)], int(match.group(2))
        if opt is None or version() < opt.since or (opt.vmnet and not has_vmnet()):
            raise syntax(f"Unknown option: {name}")
        values = [inline] if eq else []
        if opt.nargs == 0 and eq:
            raise syntax(f"Option {name} takes no value")
        first = inline if eq else (args[i] if i < len(args) else "")
        total = opt.nargs(first) if callable(opt.nargs) else opt.nargs
        while len(values) < total:
            if i >= len(args):
                raise syntax(f"The {name} option requires a value")
            values.append(args[i])
            i += 1
        if index is not None:
            low, high = opt.index
            if not low <= index <= high:
                raise Fail(f"Invalid {opt.what} number {index} (valid: {low}..{high})")
        options.append((opt.key, index, values))
    return positionals, options


def expect(positionals: list[str], names: tuple[str, ...], command: str) -> list[str]:
    if len(positionals) < len(names):
        raise syntax(f"{command}: missing {names[len(positionals)]}")
    if len(positionals) > len(names):
        raise syntax(f"{command}: invalid parameter '{positionals[len(names)]}'")
    return positionals


def choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise syntax(f"Invalid {what} '{value}'; valid: {', '.join(valid)}")
    return value


def on_off(value: str, option: str) -> bool:
    if value not in ("on", "off"):
        raise syntax(f"Invalid {option} argument '{value}' (use on or off)")
    return value == "on"


def ipv4(value: str, option: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise syntax(f"Invalid IPv4 address '{value}' for {option}") from None


def number(value: str, option: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\d+", value) or not low <= int(value) <= high:
        raise syntax(f"Invalid value '{value}' for {option} (valid: {low}..{high})")
    return int(value)


def netmask(value: str, option: str) -> int:
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{value}").prefixlen
    except ValueError:
        raise syntax(f"Invalid netmask '{value}' for {option}") from None


# --- VMs --------------------------------------------------------------------------------------

def cmd_createvm(state, args):
    pos, opts = parse(args, {"--name": Opt("name"), "--ostype": Opt("ostype"),
                             "--register": Opt("register", 0), "--basefolder": Opt("basefolder"),
                             "--uuid": Opt("uuid"), "--groups": Opt("groups"),
                             "--default": Opt("default", 0)})
    expect(pos, (), "createvm")
    got = {key: values[0] if values else True for key, _, values in opts}
    if "name" not in got:
        raise syntax("Parameter --name is required")
    ostype = choice(got.get("ostype", "Other"), OSTYPES, "guest OS type")
    folder = got.get("basefolder", os.path.expanduser("~/VirtualBox VMs"))
    settings = os.path.join(folder, got["name"], got["name"] + ".vbox")
    if any(vm["name"] == got["name"] for vm in state["vms"].values()):
        raise Fail(f"Machine settings file '{settings}' already exists",
                   "Details: code VBOX_E_FILE_ERROR (0x80bb0004), component MachineWrap")
    vm_id = got.get("uuid", str(uuid.uuid4()))
    if got.get("register"):
        state["vms"][vm_id] = {"name": got["name"], "uuid": vm_id, "ostype": ostype,
                               "settings": settings, "state": "poweroff", "memory": 128,
                               "cpus": 1, "boot": ["floppy", "dvd", "disk", "none"],
                               "extradata": {}, "nics": {}, "uarts": {}, "storagectls": {}}
    print(f"Virtual machine '{got['name']}' is created"
          f"{' and registered' if got.get('register') else ''}.")
    print(f"UUID: {vm_id}")
    print(f"Settings file: '{settings}'")


def cmd_setextradata(state, args):
    if len(args) not in (2, 3):
        raise syntax("setextradata: expected <vm> <key> [<value>]")
    vm = find_vm(state, args[0])
    if len(args) == 3:
        vm["extradata"][args[1]] = args[2]
    else:
        vm["extradata"].pop(args[1], None)


def cmd_getextradata(state, args):
    if len(args) != 2:
        raise syntax("getextradata: expected <vm> <key>|enumerate")
    vm = find_vm(state, args[0])
    if args[1] == "enumerate":
        for key, value in sorted(vm["extradata"].items()):
            print(f"Key: {key}, Value: {value}")
    elif args[1] in vm["extradata"]:
        print(f"Value: {vm['extradata'][args[1]]}")
    else:
        print("No value set!")


def _uart_nargs(first: str) -> int:
    return 1 if first == "off" else 2


def _uartmode_nargs(first: str) -> int:
    return 1 if first == "disconnected" else 2


def _delete_nargs(first: str) -> int:
    """--natpfN and --port-forward-4 take a rule, or `delete <name>`."""
    return 2 if first == "delete" else 1


def nic_opt(key, nargs=1, since=(0, 0, 0), vmnet=False):
    return Opt(key, nargs, index=(1, MAX_NICS), since=since, vmnet=vmnet, what="NIC")


SEVEN = (7, 0, 0)
MODIFYVM = {
    "--memory": Opt("memory"), "--cpus": Opt("cpus"), "--ostype": Opt("ostype"),
    "--boot": Opt("boot", index=(1, 4), what="boot device"),
    "--uart": Opt("uart", _uart_nargs, index=(1, 4), what="UART"),
    "--uartmode": Opt("uartmode", _uartmode_nargs, index=(1, 4), what="UART"),
    "--nic": nic_opt("nic"),
    "--nictype": nic_opt("nictype"), "--nic-type": nic_opt("nictype", since=SEVEN),
    "--macaddress": nic_opt("macaddress"), "--mac-address": nic_opt("macaddress", since=SEVEN),
    "--cableconnected": nic_opt("cableconnected"),
    "--cable-connected": nic_opt("cableconnected", since=SEVEN),
    "--bridgeadapter": nic_opt("bridgeadapter"),
    "--bridge-adapter": nic_opt("bridgeadapter", since=SEVEN),
    "--hostonlyadapter": nic_opt("hostonlyadapter"),
    "--host-only-adapter": nic_opt("hostonlyadapter", since=SEVEN),
    "--hostonlynet": nic_opt("hostonlynet", vmnet=True),
    "--host-only-net": nic_opt("hostonlynet", vmnet=True),
    "--intnet": nic_opt("intnet"),
    "--nat-network": nic_opt("natnetwork"), "--natnetwork": nic_opt("natnetwork"),
    "--natnet": nic_opt("natnet"), "--nat-net": nic_opt("natnet", since=SEVEN),
    "--natpf": nic_opt("natpf", _delete_nargs), "--nat-pf": nic_opt("natpf", _delete_nargs, SEVEN),
    "--natlocalhostreachable": nic_opt("natlocalhostreachable", since=SEVEN),
    "--nat-localhostreachable": nic_opt("natlocalhostreachable", since=SEVEN),
    "--nicbandwidthgroup": nic_opt("nicbandwidthgroup"),
}


def new_nic(vm: dict, n: int) -> dict:
    return vm["nics"].setdefault(str(n), {
        "attachment": "none", "type": "Am79C973", "cable": True, "natpf": {},
        "mac": "080027" + uuid.uuid4().hex[:6].upper(), "localhostreachable": False})


def check_mac(value: str) -> str:
    if value == "auto":
        return "080027" + uuid.uuid4().hex[:6].upper()
    if not re.fullmatch(r"[0-9A-Fa-f]{12}", value) or int(value[1], 16) & 1:
        raise Fail("Invalid MAC address format",
                   "Details: code E_INVALIDARG (0x80070057), component NetworkAdapterWrap, "
                   "interface INetworkAdapter, callee nsISupports",
                   "Context: \"COMSETTER(MACAddress)(bstr.raw())\"")
    return value.upper()


def parse_natpf(rule: str) -> dict:
    parts = rule.split(",")
    if len(parts) != 6:
        raise syntax(f"Invalid NAT rule '{rule}': expected name,tcp|udp,[hostip],hostport,"
                     f"[guestip],guestport")
    name, proto, host_ip, host_port, guest_ip, guest_port = parts
    if proto not in ("tcp", "udp"):
        raise syntax(f"Invalid proto '{proto}' specified for NAT rule")
    for ip in (host_ip, guest_ip):
        if ip:
            ipv4(ip, "--natpf")
    return {"name": name, "proto": proto, "host_ip": host_ip, "guest_ip": guest_ip,
            "host_port": number(host_port, "--natpf host port", 1, 65535),
            "guest_port": number(guest_port, "--natpf guest port", 1, 65535)}


def cmd_modifyvm(state, args):
    pos, opts = parse(args, MODIFYVM)
    (ref,) = expect(pos, ("<vm>",), "modifyvm")
    vm = unlocked(find_vm(state, ref))
    for key, n, values in opts:
        value = values[0]
        nic = new_nic(vm, n) if n is not None and key not in ("boot", "uart", "uartmode") else None
        if key == "memory":
            vm["memory"] = number(value, "--memory", 4, 2097152)
        elif key == "cpus":
            vm["cpus"] = number(value, "--cpus", 1, 64)
        elif key == "ostype":
            vm["ostype"] = choice(value, OSTYPES, "guest OS type")
        elif key == "boot":
            vm["boot"][n - 1] = choice(value, BOOT, f"boot device for --boot{n}")
        elif key == "uart":
            if value != "off" and (not re.fullmatch(r"0x[0-9A-Fa-f]{1,4}", value)
                                   or not re.fullmatch(r"\d{1,2}", values[1])):
                raise syntax(f"Invalid --uart{n} I/O base '{value}' or IRQ '{values[1]}'")
            vm["uarts"].setdefault(str(n), {})["port"] = None if value == "off" else values
        elif key == "uartmode":
            mode = choice(value, ("disconnected", "server", "client", "tcpserver", "tcpclient",
                                  "file"), f"--uartmode{n} mode")
            vm["uarts"].setdefault(str(n), {})["mode"] = [mode] + values[1:]
        elif key == "nic":
            valid = tuple(a for a in ATTACHMENTS if a != "hostonlynet" or has_vmnet())
            nic["attachment"] = choice(value, valid, f"type for NIC {n}")
        elif key == "nictype":
            nic["type"] = choice(value, NIC_TYPES, f"NIC type for NIC {n}")
        elif key == "macaddress":
            nic["mac"] = check_mac(value)
        elif key == "cableconnected":
            nic["cable"] = on_off(value, f"--cableconnected{n}")
        elif key == "bridgeadapter":
            nic["bridgeadapter"] = value
        elif key == "hostonlyadapter":
            if value != "none" and value not in state["hostonlyifs"]:
                raise Fail(f"Could not find host-only interface '{value}' (fake: VirtualBox "
                           f"itself notices at startvm)", NOT_FOUND)
            nic["hostonlyadapter"] = value
        elif key == "hostonlynet":
            if value not in state["hostonlynets"]:
                raise Fail(f"Could not find host-only network '{value}'", NOT_FOUND)
            nic["hostonlynet"] = value
        elif key == "intnet":
            if not value:
                raise syntax(f"--intnet{n} needs a network name")
            nic["intnet"] = value
        elif key == "natnetwork":
            if value not in state["natnets"]:
                raise Fail(f"Could not find a NAT network named '{value}' (fake: VirtualBox "
                           f"itself notices at startvm)", NOT_FOUND)
            nic["natnetwork"] = value
        elif key == "natnet":
            if value != "default":
                try:
                    ipaddress.IPv4Network(value, strict=False)
                except ValueError:
                    raise syntax(f"Invalid --natnet{n} '{value}'") from None
            nic["natnet"] = value
        elif key == "nicbandwidthgroup":
            if value != "none" and vm.get("bandwidth", {}).get(value, {}).get("type") != "network":
                raise Fail(f"Could not find a network bandwidth group named '{value}'", NOT_FOUND)
            nic["bandwidthgroup"] = value
        elif key == "natlocalhostreachable":
            nic["localhostreachable"] = on_off(value, f"--natlocalhostreachable{n}")
        elif key == "natpf":
            if value == "delete":
                if nic["natpf"].pop(values[1], None) is None:
                    raise Fail(f"Could not find NAT rule '{values[1]}' on NIC {n}")
                continue
            rule = parse_natpf(value)
            if rule["name"] in nic["natpf"]:
                raise Fail(f"A NAT rule of this name already exists: '{rule['name']}'",
                           "Details: code NS_ERROR_INVALID_ARG (0x80070057), component "
                           "NATEngineWrap, interface INATEngine")
            nic["natpf"][rule["name"]] = rule


def cmd_storagectl(state, args):
    pos, opts = parse(args, {"--name": Opt("name"), "--add": Opt("add"),
                             "--controller": Opt("controller"), "--portcount": Opt("portcount"),
                             "--bootable": Opt("bootable"), "--hostiocache": Opt("hostiocache"),
                             "--remove": Opt("remove", 0)})
    (ref,) = expect(pos, ("<vm>",), "storagectl")
    vm = unlocked(find_vm(state, ref))
    got = {key: values[0] if values else True for key, _, values in opts}
    if "name" not in got:
        raise syntax("storagectl: --name is required")
    name = got["name"]
    if got.get("remove"):
        if vm["storagectls"].pop(name, None) is None:
            raise Fail(f"Could not find a storage controller named '{name}'", NOT_FOUND)
        return
    if "add" in got:
        bus = choice(got["add"], tuple(BUSES), "storage bus")
        if name in vm["storagectls"]:
            raise Fail(f"Storage controller named '{name}' already exists",
                       "Details: code VBOX_E_OBJECT_IN_USE (0x80bb000c)")
        vm["storagectls"][name] = {"bus": bus, "controller": BUSES[bus][0], "portcount": 1,
                                   "attachments": {}}
    if name not in vm["storagectls"]:
        raise Fail(f"Could not find a storage controller named '{name}'", NOT_FOUND)
    ctl = vm["storagectls"][name]
    if "controller" in got:
        ctl["controller"] = choice(got["controller"], BUSES[ctl["bus"]],
                                   f"controller type for a {ctl['bus']} bus")
    if "portcount" in got:
        ctl["portcount"] = number(got["portcount"], "--portcount", 1, 30)


def cmd_storageattach(state, args):
    pos, opts = parse(args, {"--storagectl": Opt("storagectl"), "--port": Opt("port"),
                             "--device": Opt("device"), "--type": Opt("type"),
                             "--medium": Opt("medium"), "--mtype": Opt("mtype")})
    (ref,) = expect(pos, ("<vm>",), "storageattach")
    vm = unlocked(find_vm(state, ref))
    got = {key: values[0] for key, _, values in opts}
    for required in ("storagectl", "port", "medium"):
        if required not in got:
            raise syntax(f"storageattach: --{required} is required")
    ctl = vm["storagectls"].get(got["storagectl"])
    if ctl is None:
        raise Fail(f"Could not find a storage controller named '{got['storagectl']}'", NOT_FOUND)
    port = number(got["port"], "--port", 0, ctl["portcount"] - 1)
    device = number(got.get("device", "0"), "--device", 0, 1 if ctl["bus"] == "ide" else 0)
    slot = f"{port}-{device}"
    medium = got["medium"]
    if medium == "none":
        ctl["attachments"].pop(slot, None)
        return
    kind = choice(got.get("type", ""), tuple(MEDIUM_TYPES), "--type")
    if medium == "emptydrive" and kind == "dvddrive":
        ctl["attachments"][slot] = {"type": kind, "medium": None, "mtype": None}
        return
    if not medium.lower().endswith(MEDIUM_TYPES[kind]):
        raise Fail(f"Could not get the storage format of the medium '{medium}' (fake: a {kind} "
                   f"must be one of {', '.join(MEDIUM_TYPES[kind])})",
                   "Details: code VBOX_E_IPRT_ERROR (0x80bb0005), component MediumWrap")
    mtype = choice(got["mtype"], MTYPES, "--mtype") if "mtype" in got else None
    if kind == "hdd":
        mtype = _shared_medium_type(state, vm, medium, mtype)
    ctl["attachments"][slot] = {"type": kind, "medium": medium, "mtype": mtype}


def _shared_medium_type(state: dict, vm: dict, medium: str, mtype: str | None) -> str:
    """A hard disk in more than one VM must be of a type that allows it (multiattach, ...)."""
    others = [(other["name"], a["mtype"]) for other in state["vms"].values() if other is not vm
              for ctl in other["storagectls"].values() for a in ctl["attachments"].values()
              if a["medium"] == medium and a["type"] == "hdd"]
    if not others:
        return mtype or "normal"
    current = others[0][1]
    if mtype is not None and mtype != current:
        raise Fail(f"Cannot change the type of medium '{medium}' to {mtype}: it is attached to "
                   f"'{others[0][0]}' as {current}", "Details: code VBOX_E_INVALID_OBJECT_STATE")
    if current not in SHARABLE:
        raise Fail(f"Medium '{medium}' is already attached to virtual machine '{others[0][0]}' "
                   f"and its type ({current}) does not allow more than one",
                   "Details: code VBOX_E_OBJECT_IN_USE (0x80bb000c)")
    return current


def cmd_startvm(state, args):
    pos, opts = parse(args, {"--type": Opt("type"), "-E": Opt("putenv"), "--putenv": Opt("putenv")})
    if not pos:
        raise syntax("startvm: missing <vm>")
    for key, _, values in opts:
        if key == "type":
            choice(values[0], START_TYPES, "session type")
    for ref in pos:
        vm = find_vm(state, ref)
        if vm["state"] == "running":
            raise Fail(f"The machine '{vm['name']}' is already locked by a session (or being "
                       f"locked or unlocked)", "Details: code VBOX_E_INVALID_OBJECT_STATE")
        _check_attachments(state, vm)
        print(f"Waiting for VM \"{vm['name']}\" to power on...")
        vm["state"] = "running"
        print(f"VM \"{vm['name']}\" has been successfully started.")


def _check_attachments(state: dict, vm: dict) -> None:
    bridges = os.environ.get("VBOX_FAKE_BRIDGEDIFS", "br0,eth0").split(",")
    for n, nic in sorted(vm["nics"].items()):
        kind = nic["attachment"]
        if kind == "natnetwork" and nic.get("natnetwork") not in state["natnets"]:
            raise Fail(f"NAT network '{nic.get('natnetwork')}' of NIC {n} was not found")
        if kind == "hostonly" and nic.get("hostonlyadapter") not in state["hostonlyifs"]:
            raise Fail(f"Nonexistent host networking interface, name "
                       f"'{nic.get('hostonlyadapter')}' (VERR_INTERNAL_ERROR)")
        if kind == "hostonlynet" and nic.get("hostonlynet") not in state["hostonlynets"]:
            raise Fail(f"Host-only network '{nic.get('hostonlynet')}' was not found")
        if kind in ("bridged", "hostif") and nic.get("bridgeadapter") not in bridges:
            raise Fail(f"Failed to open/create the internal network "
                       f"'HostInterfaceNetworking-{nic.get('bridgeadapter')}' "
                       f"(VERR_INTNET_FLT_IF_NOT_FOUND)")
        if kind == "intnet" and not nic.get("intnet"):
            raise Fail(f"NIC {n} is attached to an internal network without a name")


def cmd_controlvm(state, args):
    if len(args) < 2:
        raise syntax("controlvm: expected <vm> <action>")
    vm = find_vm(state, args[0])
    link = re.fullmatch(r"setlinkstate([1-8])", args[1])
    if link:      # controlvm <vm> setlinkstate<1-N> on|off (VirtualBox manual, controlvm)
        if len(args) != 3:
            raise syntax(f"controlvm {args[1]}: expected on or off")
        if vm["state"] != "running":
            raise Fail(f"Machine '{vm['name']}' is not currently running")
        if link.group(1) not in vm["nics"]:
            raise Fail(f"Invalid NIC number {link.group(1)}")
        vm["nics"][link.group(1)]["cable"] = on_off(args[2], args[1])
        return
    trace = re.fullmatch(r"nictrace(file)?([1-8])", args[1])
    if trace:     # controlvm <vm> nictrace<1-N> on|off, nictracefile<1-N> <file>: recorded,
        if len(args) != 3:        # and the file gets a pcap header only (a fake: no frame)
            raise syntax(f"controlvm {args[1]}: expected one value")
        if vm["state"] != "running":
            raise Fail(f"Machine '{vm['name']}' is not currently running")
        if trace.group(2) not in vm["nics"]:
            raise Fail(f"Invalid NIC number {trace.group(2)}")
        nic = vm["nics"][trace.group(2)]
        if trace.group(1):
            nic["tracefile"] = args[2]
        else:
            nic["trace"] = on_off(args[2], args[1])
            if nic["trace"] and nic.get("tracefile"):     # as VirtualBox, it opens the file
                with open(nic["tracefile"], "wb") as f:
                    f.write(PCAP_HEADER)
        return
    action = choice(args[1], ("poweroff", "acpipowerbutton", "reset", "pause", "resume"),
                    "controlvm action")
    if len(args) > 2:
        raise syntax(f"controlvm {action}: invalid parameter '{args[2]}'")
    if vm["state"] != "running":
        raise Fail(f"Machine '{vm['name']}' is not currently running")
    if action in ("poweroff", "acpipowerbutton"):
        print(PROGRESS, file=sys.stderr)
        vm["state"] = "poweroff"


def _limit(value: str) -> str:
    if not re.fullmatch(r"[0-9]+[kmgKMG]?", value):
        raise syntax(f"Invalid --limit '{value}': a whole number with k, m, g, K, M or G")
    return value


def cmd_bandwidthctl(state, args):
    """bandwidthctl <vm> add NAME --type disk|network --limit N[kmgKMG] | set NAME --limit N |
    remove NAME (VirtualBox manual, VBoxManage bandwidthctl); add/remove need the VM off."""
    if len(args) < 3:
        raise syntax("bandwidthctl: expected <vm> add|set|remove <name> ...")
    vm, action, name = find_vm(state, args[0]), args[1], args[2]
    groups = vm.setdefault("bandwidth", {})
    if action == "add":
        if len(args) != 7 or args[3] != "--type" or args[5] != "--limit":
            raise syntax("bandwidthctl add: expected <name> --type disk|network --limit <N>")
        unlocked(vm)
        if name in groups:
            raise Fail(f"Bandwidth group named '{name}' already exists")
        groups[name] = {"type": choice(args[4], ("disk", "network"), "bandwidth group type"),
                        "limit": _limit(args[6])}
    elif action == "set":
        if len(args) != 5 or args[3] != "--limit":
            raise syntax("bandwidthctl set: expected <name> --limit <N>")
        if name not in groups:
            raise Fail(f"Could not find a bandwidth group named '{name}'", NOT_FOUND)
        groups[name]["limit"] = _limit(args[4])
    elif action == "remove":
        unlocked(vm)
        if groups.pop(name, None) is None:
            raise Fail(f"Could not find a bandwidth group named '{name}'", NOT_FOUND)
    else:
        raise syntax(f"bandwidthctl: unknown action '{action}'")


def cmd_unregistervm(state, args):
    pos, _ = parse(args, {"--delete": Opt("delete", 0), "--delete-all": Opt("delete_all", 0)})
    (ref,) = expect(pos, ("<vm>",), "unregistervm")
    vm = find_vm(state, ref)
    if vm["state"] == "running":
        raise Fail(f"Cannot unregister the machine '{vm['name']}' while it is locked",
                   "Details: code VBOX_E_INVALID_OBJECT_STATE (0x80bb0007)")
    del state["vms"][vm["uuid"]]


def cmd_showvminfo(state, args):
    pos, opts = parse(args, {"--machinereadable": Opt("mr", 0), "--details": Opt("details", 0)})
    (ref,) = expect(pos, ("<vm>",), "showvminfo")
    vm = find_vm(state, ref)
    if not any(key == "mr" for key, _, _ in opts):
        print(f"Name:            {vm['name']}\nUUID:            {vm['uuid']}\n"
              f"State:           {vm['state']}\nMemory size:     {vm['memory']}MB")
        return
    lines = [("name", vm["name"]), ("UUID", vm["uuid"]), ("ostype", vm["ostype"]),
             ("CfgFile", vm["settings"]), ("memory", vm["memory"]), ("cpus", vm["cpus"]),
             ("VMState", vm["state"])]
    lines += [(f"boot{i + 1}", dev) for i, dev in enumerate(vm["boot"])]
    rules = 0
    for n in range(1, MAX_NICS + 1):
        nic = vm["nics"].get(str(n))
        if nic is None or nic["attachment"] == "none":
            lines.append((f"nic{n}", "none"))
            continue
        lines += [(f"nic{n}", nic["attachment"]), (f"nictype{n}", nic["type"]),
                  (f"macaddress{n}", nic["mac"]),
                  (f"cableconnected{n}", "on" if nic["cable"] else "off")]
        for key in ("bridgeadapter", "hostonlyadapter", "hostonlynet", "intnet"):
            if key in nic:
                lines.append((f"{key}{n}", nic[key]))
        if "natnetwork" in nic:
            lines.append((f"nat-network{n}", nic["natnetwork"]))
        for rule in nic["natpf"].values():
            lines.append((f"Forwarding({rules})", f"{rule['name']},{rule['proto']},"
                          f"{rule['host_ip']},{rule['host_port']},{rule['guest_ip']},"
                          f"{rule['guest_port']}"))
            rules += 1
    for n, uart in sorted(vm["uarts"].items()):
        if uart.get("port"):
            lines.append((f"uart{n}", f"{uart['port'][0]},{uart['port'][1]}"))
        if uart.get("mode"):
            lines.append((f"uartmode{n}", ",".join(uart["mode"])))
    for name, ctl in sorted(vm["storagectls"].items()):
        for slot, att in sorted(ctl["attachments"].items()):
            lines.append((f"{name}-{slot}", att["medium"] or "emptydrive"))
    for key, value in lines:
        print(f"{key}={value}" if isinstance(value, int) else f'{key}="{value}"')


def cmd_guestproperty(state, args):
    if len(args) >= 2 and args[0] == "get":
        find_vm(state, args[1])
        if len(args) != 3:
            raise syntax("guestproperty get: expected <vm> <property>")
        print("No value set!")
    elif len(args) >= 2 and args[0] == "enumerate":
        find_vm(state, args[1])
    else:
        raise syntax("guestproperty: expected get|enumerate <vm> ...")


# --- networks ---------------------------------------------------------------------------------

NATNETWORK = {"--netname": Opt("netname"), "--network": Opt("network"),
              "--ipv4-prefix": Opt("network", since=SEVEN), "--enable": Opt("enable", 0),
              "--disable": Opt("disable", 0), "--dhcp": Opt("dhcp"), "--ipv6": Opt("ipv6"),
              "--port-forward-4": Opt("pf4", _delete_nargs),
              "--port-forward-6": Opt("pf6", _delete_nargs), "--loopback-4": Opt("loopback4")}
FORWARD_RE = re.compile(r"^([^:]*):(tcp|udp):\[([^\]]*)\]:(\d+):\[([^\]]*)\]:(\d+)$")


def cmd_natnetwork(state, args):
    if not args:
        raise syntax("natnetwork: expected add|modify|remove|start|stop|list")
    sub = choice(args[0], ("add", "modify", "remove", "start", "stop", "list"), "natnetwork command")
    if sub == "list":
        return cmd_list(state, ["natnets"])
    pos, opts = parse(args[1:], NATNETWORK)
    expect(pos, (), f"natnetwork {sub}")
    got = {key: values for key, _, values in opts}
    name = got.get("netname", [None])[0]
    if not name:
        raise syntax(f"natnetwork {sub}: --netname is required")
    nets = state["natnets"]
    if sub == "add":
        if name in nets:
            raise Fail(f"NATNetwork server already exists: '{name}'",
                       "Details: code E_INVALIDARG (0x80070057), component VirtualBoxWrap")
        if "network" not in got:
            raise syntax("natnetwork add: --network is required")
        nets[name] = {"network": None, "enabled": True, "dhcp": True, "ipv6": False,
                      "forwards": {}, "started": False}
    elif name not in nets:
        raise Fail(f"Could not find a NAT network named '{name}'", NOT_FOUND)
    net = nets[name]
    if sub == "remove":
        del nets[name]
        return
    if sub in ("start", "stop"):
        if sub == "start" and not net["enabled"]:
            raise Fail(f"NAT network '{name}' is disabled")
        net["started"] = sub == "start"
        return
    for key, _, values in opts:
        if key == "network":
            try:
                net["network"] = str(ipaddress.IPv4Network(values[0], strict=True))
            except ValueError:
                raise syntax(f"Invalid --network '{values[0]}': expected a CIDR like "
                             f"192.168.15.0/24") from None
        elif key in ("enable", "disable"):
            net["enabled"] = key == "enable"
        elif key == "dhcp":
            net["dhcp"] = on_off(values[0], "--dhcp")
        elif key == "ipv6":
            net["ipv6"] = on_off(values[0], "--ipv6")
        elif key == "pf4":
            _natnet_forward(net, values)
        elif key == "pf6":
            raise Fail("IPv6 port forwarding is not emulated by this test stand-in")


def _natnet_forward(net: dict, values: list[str]) -> None:
    if values[0] == "delete":
        if net["forwards"].pop(values[1], None) is None:
            raise Fail(f"Could not find port-forwarding rule '{values[1]}'")
        return
    match = FORWARD_RE.match(values[0])
    if not match:
        raise syntax(f"Invalid port-forward rule '{values[0]}': expected "
                     f"name:tcp|udp:[hostip]:hostport:[guestip]:guestport")
    name, proto, host_ip, host_port, guest_ip, guest_port = match.groups()
    if not name:
        raise syntax("Port-forward rules need a name")
    if name in net["forwards"]:
        raise Fail(f"A NAT rule of this name already exists: '{name}'")
    if host_ip:
        ipv4(host_ip, "--port-forward-4")
    if ipaddress.IPv4Address(ipv4(guest_ip, "--port-forward-4")) not in \
            ipaddress.IPv4Network(net["network"]):
        raise Fail(f"Guest address {guest_ip} is not in NAT network {net['network']}")
    net["forwards"][name] = {"proto": proto, "host_ip": host_ip, "guest_ip": guest_ip,
                             "host_port": number(host_port, "host port", 1, 65535),
                             "guest_port": number(guest_port, "guest port", 1, 65535)}


def cmd_hostonlyif(state, args):
    if not args:
        raise syntax("hostonlyif: expected create|ipconfig|remove")
    sub = choice(args[0], ("create", "ipconfig", "remove"), "hostonlyif command")
    ifs = state["hostonlyifs"]
    if sub == "create":
        expect(args[1:], (), "hostonlyif create")
        if has_vmnet():
            raise Fail("Failed to create the host-only adapter",
                       "Details: code E_NOTIMPL (0x80004001): host-only adapters are not "
                       "supported on this host; use 'VBoxManage hostonlynet'")
        n = next(k for k in range(128) if f"vboxnet{k}" not in ifs)
        ifs[f"vboxnet{n}"] = {"ip": f"192.168.{56 + n}.1", "netmask": "255.255.255.0",
                              "dhcp": False}
        print(PROGRESS, file=sys.stderr)
        print(f"Interface 'vboxnet{n}' was successfully created")
        return
    if sub == "remove":
        (name,) = expect(args[1:], ("<interface>",), "hostonlyif remove")
        if name not in ifs:
            raise Fail(f"Could not find interface '{name}'", NOT_FOUND)
        del ifs[name]
        state["dhcpservers"].pop(f"HostInterfaceNetworking-{name}", None)
        return
    pos, opts = parse(args[1:], {"--dhcp": Opt("dhcp", 0), "--ip": Opt("ip"),
                                 "--netmask": Opt("netmask"), "--ipv6": Opt("ipv6"),
                                 "--netmasklengthv6": Opt("len6")})
    (name,) = expect(pos, ("<interface>",), "hostonlyif ipconfig")
    if name not in ifs:
        raise Fail(f"Could not find interface '{name}'", NOT_FOUND)
    got = {key: values[0] if values else True for key, _, values in opts}
    if "ip" in got:
        ip = ipv4(got["ip"], "--ip")
        mask = got.get("netmask", "255.255.255.0")
        netmask(mask, "--netmask")
        check_hostonly_ip(ip, "EnableStaticIPConfig(Bstr(pszIp).raw(), Bstr(pszNetmask).raw())")
        ifs[name].update(ip=ip, netmask=mask, dhcp=False)
    elif got.get("dhcp"):
        ifs[name]["dhcp"] = True
    elif "ipv6" not in got:
        raise syntax("hostonlyif ipconfig: give --dhcp, --ip or --ipv6")


def cmd_hostonlynet(state, args):
    if not has_vmnet():
        raise syntax("Invalid command 'hostonlynet' (host-only networks exist only on macOS "
                     "hosts with VirtualBox 7.x)")
    if not args:
        raise syntax("hostonlynet: expected add|modify|remove")
    sub = choice(args[0], ("add", "modify", "remove"), "hostonlynet command")
    pos, opts = parse(args[1:], {"--name": Opt("name"), "--id": Opt("id"),
                                 "--netmask": Opt("netmask"), "--lower-ip": Opt("lower"),
                                 "--upper-ip": Opt("upper"), "--enable": Opt("enable", 0),
                                 "--disable": Opt("disable", 0)})
    expect(pos, (), f"hostonlynet {sub}")
    got = {key: values[0] if values else True for key, _, values in opts}
    nets = state["hostonlynets"]
    name = got.get("name") or next((k for k, v in nets.items() if v["id"] == got.get("id")), None)
    if not name:
        raise syntax(f"hostonlynet {sub}: --name or --id is required")
    if sub == "add":
        if name in nets:
            raise Fail(f"Host-only network '{name}' already exists")
        for key, flag in (("netmask", "--netmask"), ("lower", "--lower-ip"),
                          ("upper", "--upper-ip")):
            if key not in got:
                raise syntax(f"hostonlynet add: {flag} is required")
        nets[name] = {"id": got.get("id", str(uuid.uuid4())), "enabled": True}
    elif name not in nets:
        raise Fail(f"Could not find host-only network '{name}'", NOT_FOUND)
    if sub == "remove":
        del nets[name]
        return
    net = nets[name]
    for key in ("netmask", "lower", "upper"):
        if key in got:
            net[key] = ipv4(got[key], f"--{key}")
    if "enable" in got or "disable" in got:
        net["enabled"] = "enable" in got
    prefix = netmask(net["netmask"], "--netmask")
    subnet = ipaddress.IPv4Network(f"{net['lower']}/{prefix}", strict=False)
    lower, upper = ipaddress.IPv4Address(net["lower"]), ipaddress.IPv4Address(net["upper"])
    if upper not in subnet or upper < lower:
        raise syntax(f"--upper-ip {upper} must be in {subnet} and not below --lower-ip {lower}")
    for ip in (net["lower"], net["upper"]):
        check_hostonly_ip(ip, "COMSETTER(LowerIP)")


DHCPSERVER = {
    "--network": Opt("network"), "--netname": Opt("network"),
    "--interface": Opt("interface"), "--ifname": Opt("interface"),
    "--server-ip": Opt("server"), "--ip": Opt("server"), "--netmask": Opt("netmask"),
    "--lower-ip": Opt("lower"), "--lowerip": Opt("lower"),
    "--upper-ip": Opt("upper"), "--upperip": Opt("upper"),
    "--enable": Opt("enable", 0), "--disable": Opt("disable", 0), "--global": Opt("global", 0),
    "--vm": Opt("vm"), "--nic": Opt("nic"), "--mac-address": Opt("mac"),
    "--fixed-address": Opt("fixed"),
}


def cmd_dhcpserver(state, args):
    if not args:
        raise syntax("dhcpserver: expected add|modify|remove|start|stop|restart")
    sub = choice(args[0], ("add", "modify", "remove", "start", "stop", "restart"),
                 "dhcpserver command")
    pos, opts = parse(args[1:], DHCPSERVER)
    expect(pos, (), f"dhcpserver {sub}")
    got = {key: values[0] if values else True for key, _, values in opts}
    if "network" in got and "interface" in got:
        raise syntax("Either --network or --interface, not both")
    if "interface" in got:
        if got["interface"] not in state["hostonlyifs"]:
            raise syntax(f"Failed to locate host-only interface '{got['interface']}'")
        network = f"HostInterfaceNetworking-{got['interface']}"
    elif "network" in got:
        network = got["network"]
    else:
        raise syntax("You need to specify either --network or --interface to identify the "
                     "DHCP server")
    servers = state["dhcpservers"]
    if sub == "add":
        if network in servers:
            raise Fail(f"DHCP server already exists for network '{network}'",
                       "Details: code E_INVALIDARG (0x80070057), component VirtualBoxWrap")
        for key, flag in (("server", "--server-ip"), ("netmask", "--netmask"),
                          ("lower", "--lower-ip"), ("upper", "--upper-ip")):
            if key not in got:
                raise syntax(f"Missing required option: {flag}")
        servers[network] = {"enabled": False, "fixed": {}}
    elif network not in servers:
        raise syntax(f"Failed to find DHCP server for network '{network}'")
    if sub == "remove":
        del servers[network]
        return
    server = servers[network]
    if sub in ("start", "stop", "restart"):
        return
    for key in ("server", "lower", "upper"):
        if key in got:
            server[key] = ipv4(got[key], f"--{key}")
    if "netmask" in got:
        netmask(got["netmask"], "--netmask")
        server["netmask"] = got["netmask"]
    subnet = ipaddress.IPv4Network(f"{server['server']}/{server['netmask']}", strict=False)
    if not all(ipaddress.IPv4Address(server[k]) in subnet for k in ("lower", "upper")):
        raise Fail(f"The DHCP range {server['lower']}-{server['upper']} is not in {subnet}")
    if "enable" in got or "disable" in got:
        server["enabled"] = "enable" in got
    _dhcp_configs(state, server, opts)


def _dhcp_configs(state: dict, server: dict, opts: list[tuple]) -> None:
    """--vm/--nic and --mac-address select a config; --fixed-address applies to it."""
    scope = None
    for key, _, values in opts:
        value = values[0] if values else None
        if key == "global":
            scope = None
        elif key == "vm":
            scope = [find_vm(state, value)["name"], 1]
        elif key == "nic":
            if scope is None or not isinstance(scope, list):
                raise syntax("--nic option requires a --vm preceeding selecting the VM it "
                             "should apply to")
            scope[1] = number(value, "--nic", 1, MAX_NICS)
        elif key == "mac":
            if not re.fullmatch(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{12}", value):
                raise syntax(f"Invalid MAC address '{value}'")
            scope = "mac:" + re.sub(r"[:-]", "", value).lower()
        elif key == "fixed":
            if scope is None:
                raise syntax("--fixed-address can only be applied to a VM NIC or an MAC address")
            ipv4(value, "--fixed-address")
            label = scope if isinstance(scope, str) else f"vm:{scope[0]}/{scope[1]}"
            server["fixed"][label] = value


# --- lists ------------------------------------------------------------------------------------

def cmd_list(state, args):
    what = args[0] if args else ""
    kinds = ("vms", "runningvms", "natnets", "natnetworks", "hostonlyifs", "dhcpservers",
             "bridgedifs") + (("hostonlynets",) if has_vmnet() else ())
    choice(what, kinds, "list type")
    if what in ("vms", "runningvms"):
        for vm in state["vms"].values():
            if what == "vms" or vm["state"] == "running":
                print(f"\"{vm['name']}\" {{{vm['uuid']}}}")
    elif what in ("natnets", "natnetworks"):
        for name, net in state["natnets"].items():
            network = ipaddress.IPv4Network(net["network"])
            print(f"NetworkName:    {name}\nIP:             {network.network_address + 1}\n"
                  f"Network:        {network}\nIPv6 Enabled:   {'Yes' if net['ipv6'] else 'No'}\n"
                  f"DHCP Enabled:   {'Yes' if net['dhcp'] else 'No'}\n"
                  f"Enabled:        {'Yes' if net['enabled'] else 'No'}")
            if net["forwards"]:
                print("Port-forwarding (ipv4)")
                for rule, f in net["forwards"].items():
                    print(f"        {rule}:{f['proto']}:[{f['host_ip']}]:{f['host_port']}:"
                          f"[{f['guest_ip']}]:{f['guest_port']}")
            print()
    elif what == "hostonlyifs":
        for name, itf in state["hostonlyifs"].items():
            print(f"Name:            {name}\nDHCP:            "
                  f"{'Enabled' if itf['dhcp'] else 'Disabled'}\nIPAddress:       {itf['ip']}\n"
                  f"NetworkMask:     {itf['netmask']}\nStatus:          Up\n"
                  f"VBoxNetworkName: HostInterfaceNetworking-{name}\n")
    elif what == "hostonlynets":
        for name, net in state["hostonlynets"].items():
            print(f"Name:            {name}\nGUID:            {net['id']}\n"
                  f"State:           {'Enabled' if net['enabled'] else 'Disabled'}\n"
                  f"NetworkMask:     {net['netmask']}\nLowerIP:         {net['lower']}\n"
                  f"UpperIP:         {net['upper']}\n")
    elif what == "dhcpservers":
        for name, server in state["dhcpservers"].items():
            print(f"NetworkName:    {name}\nDhcpd IP:       {server['server']}\n"
                  f"LowerIPAddress: {server['lower']}\nUpperIPAddress: {server['upper']}\n"
                  f"NetworkMask:    {server['netmask']}\n"
                  f"Enabled:        {'Yes' if server['enabled'] else 'No'}\n")
    elif what == "bridgedifs":
        for name in os.environ.get("VBOX_FAKE_BRIDGEDIFS", "br0,eth0").split(","):
            print(f"Name:            {name}\nStatus:          Up\n")


# --- appliances ------------------------------------------------------------------------------

CONTROLLER_NAMES = {"sata": "SATA Controller", "ide": "IDE Controller", "scsi": "SCSI Controller"}
BUS_OF = {"sata": "sata", "ide": "ide", "scsi": "scsi"}


def cmd_import(state, args):
    """import <ovf> [-n|--dry-run] [--vsys 0 --vmname NAME] [--vsys 0 --unit N --disk PATH]:
    the OVF is read by vbox_ovf.py (beside this file); a dry run prints what would be made."""
    import vbox_ovf

    pos, opts = parse(args, {"-n": Opt("dry", 0), "--dry-run": Opt("dry", 0),
                             "--vsys": Opt("vsys"), "--vmname": Opt("vmname"),
                             "--unit": Opt("unit"), "--disk": Opt("disk"),
                             "--ostype": Opt("ostype"), "--basefolder": Opt("basefolder")})
    (ovf,) = expect(pos, ("<ovf>",), "import")
    got = {key: values[0] if values else True for key, _, values in opts}
    try:
        appliance = vbox_ovf.read(ovf)
    except vbox_ovf.OvfError as exc:
        raise Fail(str(exc), "Details: code VBOX_E_FILE_ERROR (0x80bb0004), component ApplianceWrap")
    name = got.get("vmname", appliance["name"])
    folder = os.path.join(got.get("basefolder", os.path.expanduser("~/VirtualBox VMs")), name)
    print(f"Interpreting {os.path.abspath(ovf)}...\nOK.\nVirtual system 0:")
    print(f' 0: Suggested OS type: "{appliance["ostype"]}"\n 1: Suggested VM name "{appliance["name"]}"')
    for unit, medium in enumerate(appliance["media"], 2):
        kind = "Hard disk image" if medium["type"] == "hdd" else "CD-ROM"
        print(f" {unit}: {kind}: source image={medium['file']}, target path="
              f"{os.path.join(folder, medium['file'])}, controller={medium['controller']};"
              f"channel={medium['port']}")
    if got.get("dry"):
        return
    if any(vm["name"] == name for vm in state["vms"].values()):
        raise Fail(f"A machine named '{name}' already exists")
    vm_id = str(uuid.uuid4())
    ctls = {iid: CONTROLLER_NAMES[bus] for iid, bus in appliance["controllers"].items()}
    vm = {"name": name, "uuid": vm_id, "ostype": appliance["ostype"],
          "settings": os.path.join(folder, name + ".vbox"), "state": "poweroff",
          "memory": appliance["memory"], "cpus": appliance["cpus"],
          "boot": ["floppy", "dvd", "disk", "none"], "extradata": {}, "nics": {}, "uarts": {},
          "storagectls": {ctls[iid]: {"bus": BUS_OF[bus], "controller": BUSES[bus][0],
                                      "portcount": 30 if bus == "sata" else 2, "attachments": {}}
                          for iid, bus in appliance["controllers"].items()}}
    for medium in appliance["media"]:
        target = os.path.join(folder, medium["file"])
        vm["storagectls"][ctls[medium["controller"]]]["attachments"][f"{medium['port']}-0"] = {
            "type": medium["type"], "medium": target,
            "mtype": "normal" if medium["type"] == "hdd" else None}
    for n, nic in enumerate(appliance["nics"], 1):
        new_nic(vm, n).update(attachment="nat", type="82540EM" if nic["type"] == "E1000"
                              else "Am79C973")
    state["vms"][vm_id] = vm
    print("Successfully imported the appliance.")


COMMANDS = {
    "createvm": cmd_createvm, "setextradata": cmd_setextradata, "getextradata": cmd_getextradata,
    "modifyvm": cmd_modifyvm, "storagectl": cmd_storagectl, "storageattach": cmd_storageattach,
    "startvm": cmd_startvm, "controlvm": cmd_controlvm, "unregistervm": cmd_unregistervm,
    "showvminfo": cmd_showvminfo, "guestproperty": cmd_guestproperty, "list": cmd_list,
    "natnetwork": cmd_natnetwork, "hostonlyif": cmd_hostonlyif, "hostonlynet": cmd_hostonlynet,
    "dhcpserver": cmd_dhcpserver, "import": cmd_import, "bandwidthctl": cmd_bandwidthctl,
}
READ_ONLY = {"getextradata", "showvminfo", "guestproperty", "list"}


def fake_info() -> str:
    return (f"VBoxManage TEST STAND-IN (tests/fakes/vboxmanage.py) - not VirtualBox\n"
            f"version={version_string()} host_os={host_os()} "
            f"state={os.environ.get('VBOX_FAKE_STATE', '(unset)')} "
            f"networks_conf={os.environ.get('VBOX_FAKE_NETWORKS_CONF', '(default)')}")


def main(argv: list[str]) -> int:
    args = list(argv)
    while args[:1] in (["-q"], ["--nologo"]):        # global options before the command
        args.pop(0)
    try:
        if not args:
            raise syntax("No command given (this is a test stand-in; see --fake-info)")
        if args[0] == "--fake-info":
            print(fake_info())
            return 0
        if args[0] in ("--version", "-v", "-V"):
            version()
            print(version_string())
            return 0
        handler = COMMANDS.get(args[0])
        if handler is None:
            raise syntax(f"Invalid command '{args[0]}'")
        state = load_state()
        handler(state, args[1:])
        if args[0] not in READ_ONLY:
            save_state(state)
        return 0
    except Fail as exc:
        for line in exc.lines:
            print(f"VBoxManage: error: {line}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""How vnet talks to VirtualBox: `backend()` picks the Python API (vboxapi) or VBoxManage at
run time, and both answer the same two calls.

The interface is the smallest both can honour:
- `version() -> (major, minor, build)`
- `run(argv, check=True) -> runner.Result`, where argv is one line of a VirtualBox plan
  (`("VBoxManage", "createvm", ...)`, see vbox_render.py). The Result has VBoxManage's exit code
  and output grammar for the few outputs the executor reads: `hostonlyif create`,
  `list vms|runningvms|natnets|hostonlyifs`, `getextradata`, `guestproperty get`,
  `dhcpserver findlease`.

`VBoxManage` runs argv through provisioner.host.runner. `VBoxApi` does the commands the VirtualBox Main
API covers (the SDK reference, "Using the Python API" and IMachine/INetworkAdapter) through
vboxapi's `VirtualBoxManager`, and hands every other line (host-only interfaces, DHCP servers,
UARTs, NAT-network forwards, ...) to VBoxManage, which VirtualBox always installs next to the
SDK glue. It cannot run on a machine without VirtualBox; its selection is unit-tested with a
fake `vboxapi` module.
"""
from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Sequence

from ...host import runner
from ...errors import CommandFailed, HypervisorError, VnetError
from ...host.runner import Result
from ...progress import Progress

ENV_BINARY = "VNET_VBOXMANAGE"
BINARIES = ("VBoxManage", "vboxmanage")       # Linux packages install both spellings
VERSION_RE = re.compile(r"^\s*(\d+)\.(\d+)\.(\d+)", re.M)
TIMEOUT = 300.0                                # one VBoxManage call (startvm waits for power-on)
INSTALL_HINT = ("install VirtualBox 6.1 or 7.x (Debian/Ubuntu: the virtualbox package or "
                "https://www.virtualbox.org/wiki/Linux_Downloads), or set VNET_VBOXMANAGE to "
                "the path of its VBoxManage")



def parse_version(text: str) -> tuple[int, int, int]:
    """"7.0.20r163906" / "6.1.50_Ubuntur161033" -> (7, 0, 20); warnings before it are skipped."""
    match = VERSION_RE.search(text)
    if match is None:
        raise HypervisorError(f"cannot read a VirtualBox version from {text.strip()[:200]!r}",
                              hint="run `VBoxManage --version` by hand; it should print e.g. "
                                   "7.0.20r163906")
    return tuple(int(x) for x in match.groups())


def find_vboxmanage() -> str:
    """$VNET_VBOXMANAGE, else VBoxManage on PATH; a VnetError saying what to install if neither."""
    explicit = os.environ.get(ENV_BINARY)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise VnetError(f"{ENV_BINARY}={explicit} is not an executable file",
                            hint=INSTALL_HINT)
        return explicit
    for name in BINARIES:
        path = runner.which(name)
        if path:
            return path
    raise VnetError("VirtualBox is not installed here (VBoxManage not found on PATH)",
                    hint=INSTALL_HINT)


class VBoxManage:
    """Every plan line through one VBoxManage binary."""

    name = "vboxmanage"

    def __init__(self, path: str, reason: str = ""):
        self.path = path
        self.reason = reason

    def describe(self) -> str:
        return f"VBoxManage ({self.path})"

    def version(self) -> tuple[int, int, int]:
        result = self.run(("VBoxManage", "--version"))
        return parse_version(result.stdout)

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = TIMEOUT) -> Result:
        if not argv or argv[0] != "VBoxManage":
            raise ValueError(f"not a VBoxManage plan line: {argv!r}")
        result = runner.run([self.path, *argv[1:]], check=False, timeout=timeout)
        result = Result(list(argv), result.returncode, result.stdout, result.stderr)
        if check and result.returncode != 0:
            raise CommandFailed(list(argv), result.returncode, result.stderr or result.stdout)
        return result


class VBoxApi:
    """Plan lines through vboxapi where the Main API covers them; the rest via VBoxManage.

    Natively: createvm, setextradata, getextradata, modifyvm (memory, CPUs, NIC attachment,
    type, MAC, cable, NAT forwards), storagectl, storageattach (hard disks), startvm,
    controlvm poweroff, unregistervm --delete, natnetwork add, list vms|runningvms and
    guestproperty get. A line with anything else goes whole to VBoxManage."""

    name = "vboxapi"

    def __init__(self, manager, reason: str = "",
                 fallback: Callable[[], VBoxManage] | None = None):
        self.mgr = manager
        self.vbox = manager.getVirtualBox()          # the 7.0 glue has no mgr.vbox attribute
        self.c = manager.constants
        self.reason = reason
        self._fallback_factory = fallback or (lambda: VBoxManage(find_vboxmanage()))
        self._fallback: VBoxManage | None = None
        self.delegated = 0                           # lines VBoxManage ran for us

    def describe(self) -> str:
        return f"vboxapi VirtualBoxManager (API {getattr(self.vbox, 'APIVersion', '?')})"

    def version(self) -> tuple[int, int, int]:
        return parse_version(str(self.vbox.version))

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = TIMEOUT) -> Result:
        handler = getattr(self, "_" + argv[1].replace("-", "_"), None) if len(argv) > 1 else None
        native = handler is not None and handler(list(argv[2:]), dry=True)
        if not native:
            if self._fallback is None:
                self._fallback = self._fallback_factory()
            self.delegated += 1
            return self._fallback.run(argv, check=check, timeout=timeout)
        try:
            out = handler(list(argv[2:]), dry=False) or ""
            result = Result(list(argv), 0, out, "")
        except Exception as exc:    # XPCOM/COM errors carry VirtualBox's own message text
            result = Result(list(argv), 1, "", f"VBoxManage: error: {exc} (vboxapi)\n")
        if check and result.returncode != 0:
            raise CommandFailed(list(argv), result.returncode, result.stderr)
        return result

    # --- the handlers: dry=True answers "can you do all of this line?" -------------------------

    def _machine(self, name: str):
        return self.vbox.findMachine(name)

    def _locked(self, name: str, lock: str, work: Callable) -> None:
        session = self.mgr.getSessionObject()
        self._machine(name).lockMachine(session, getattr(self.c, f"LockType_{lock}"))
        try:
            work(session)
        finally:
            session.unlockMachine()

    def _createvm(self, args: list[str], dry: bool):
        opts = _options(args)
        if dry:
            return opts is not None and set(opts) <= {"name", "ostype", "register", "basefolder",
                                                      "uuid"}
        name, ostype = opts["name"], opts.get("ostype", "Other")
        settings = (self.vbox.composeMachineFilename(name, "", "", opts["basefolder"])
                    if opts.get("basefolder") else "")
        # IVirtualBox::createMachine's flags: "UUID=<uuid>" gives the machine that UUID
        flags = f"UUID={opts['uuid']}" if opts.get("uuid") else ""
        version = self.version()
        if version >= (7, 1, 0):        # 7.1 inserts the platform architecture after the name
            machine = self.vbox.createMachine(settings, name, self.c.PlatformArchitecture_x86,
                                              [], ostype, flags, "", "", "")
        elif version >= (7, 0, 0):      # 7.0 appends cipher, passwordId, password
            machine = self.vbox.createMachine(settings, name, [], ostype, flags, "", "", "")
        else:
            machine = self.vbox.createMachine(settings, name, [], ostype, flags)
        machine.saveSettings()
        if "register" in opts:
            self.vbox.registerMachine(machine)
        return f"Virtual machine '{name}' is created and registered.\nUUID: {machine.id}\n"

    def _setextradata(self, args: list[str], dry: bool):
        if dry:
            return len(args) == 3
        self._machine(args[0]).setExtraData(args[1], args[2])

    def _getextradata(self, args: list[str], dry: bool):
        if dry:
            return len(args) == 2 and args[1] != "enumerate"
        value = self._machine(args[0]).getExtraData(args[1])
        return f"Value: {value}\n" if value else "No value set!\n"

    NIC_OPTS = frozenset({"nic", "nictype", "macaddress", "cableconnected", "nat-network",
                          "intnet", "bridgeadapter", "hostonlyadapter", "natpf"})

    def _modifyvm(self, args: list[str], dry: bool):
        pairs = _indexed_pairs(args[1:])
        if dry:
            return bool(args) and pairs is not None and all(
                (key in ("memory", "cpus") and n is None) or (key in self.NIC_OPTS and n)
                for key, n, _ in pairs)
        c = self.c
        attach = {"nat": c.NetworkAttachmentType_NAT,
                  "natnetwork": c.NetworkAttachmentType_NATNetwork,
                  "intnet": c.NetworkAttachmentType_Internal,
                  "bridged": c.NetworkAttachmentType_Bridged,
                  "hostonly": c.NetworkAttachmentType_HostOnly}
        types = {"virtio": c.NetworkAdapterType_Virtio, "82540EM": c.NetworkAdapterType_I82540EM}

        def work(session):
            sm = session.machine
            for key, n, value in pairs:
                nic = sm.getNetworkAdapter(n - 1) if n else None
                if key == "memory":
                    sm.memorySize = int(value)
                elif key == "cpus":
                    sm.CPUCount = int(value)
                elif key == "nic":
                    nic.enabled = True
                    nic.attachmentType = attach[value]
                elif key == "nictype":
                    nic.adapterType = types[value]
                elif key == "macaddress":
                    nic.MACAddress = value
                elif key == "cableconnected":
                    nic.cableConnected = value == "on"
                elif key == "nat-network":
                    nic.NATNetwork = value
                elif key == "intnet":
                    nic.internalNetwork = value
                elif key == "bridgeadapter":
                    nic.bridgedInterface = value
                elif key == "hostonlyadapter":
                    nic.hostOnlyInterface = value
                elif key == "natpf":
                    name, proto, host_ip, host_port, guest_ip, guest_port = value.split(",")
                    nic.NATEngine.addRedirect(name, getattr(c, f"NATProtocol_{proto.upper()}"),
                                              host_ip, int(host_port), guest_ip, int(guest_port))
            sm.saveSettings()
        self._locked(args[0], "Write", work)

    def _storagectl(self, args: list[str], dry: bool):
        opts = _options(args[1:])
        if dry:
            return (bool(args) and opts is not None and opts.get("add") == "sata"
                    and set(opts) <= {"name", "add", "controller", "portcount"})

        def work(session):
            ctl = session.machine.addStorageController(opts["name"], self.c.StorageBus_SATA)
            if "portcount" in opts:
                ctl.portCount = int(opts["portcount"])
            session.machine.saveSettings()
        self._locked(args[0], "Write", work)

    def _storageattach(self, args: list[str], dry: bool):
        opts = _options(args[1:])
        if dry:
            return (bool(args) and opts is not None and opts.get("type") == "hdd"
                    and opts.get("mtype") in (None, "multiattach")
                    and set(opts) <= {"storagectl", "port", "device", "type", "medium", "mtype"})
        c = self.c
        medium = self.vbox.openMedium(opts["medium"], c.DeviceType_HardDisk,
                                      c.AccessMode_ReadWrite, False)
        if opts.get("mtype") == "multiattach" and medium.type != c.MediumType_MultiAttach:
            medium.type = c.MediumType_MultiAttach

        def work(session):
            session.machine.attachDevice(opts["storagectl"], int(opts["port"]),
                                         int(opts.get("device", 0)), c.DeviceType_HardDisk, medium)
            session.machine.saveSettings()
        self._locked(args[0], "Write", work)

    def _startvm(self, args: list[str], dry: bool):
        if dry:
            return len(args) == 3 and args[1:] == ["--type", "headless"]
        session = self.mgr.getSessionObject()
        progress = self._machine(args[0]).launchVMProcess(session, "headless", [])
        progress.waitForCompletion(-1)
        try:
            if progress.resultCode != 0:
                raise HypervisorError(f"launchVMProcess failed: {progress.errorInfo.text}")
        finally:
            session.unlockMachine()
        return f'VM "{args[0]}" has been successfully started.\n'

    def _controlvm(self, args: list[str], dry: bool):
        if dry:
            return args[1:] == ["poweroff"]
        if self._machine(args[0]).state != self.c.MachineState_Running:
            raise HypervisorError(f"Machine '{args[0]}' is not currently running")
        self._locked(args[0], "Shared",
                     lambda session: session.console.powerDown().waitForCompletion(-1))

    def _unregistervm(self, args: list[str], dry: bool):
        if dry:
            return args[1:] == ["--delete"]
        machine = self._machine(args[0])
        media = machine.unregister(self.c.CleanupMode_DetachAllReturnHardDisksOnly)
        machine.deleteConfig(media).waitForCompletion(-1)

    def _natnetwork(self, args: list[str], dry: bool):
        opts = _options(args[1:])
        if dry:
            return (args[:1] == ["add"] and opts is not None
                    and set(opts) <= {"netname", "network", "enable", "dhcp"})
        net = self.vbox.createNATNetwork(opts["netname"])
        net.network = opts["network"]
        net.enabled = "enable" in opts
        net.needDhcp = opts.get("dhcp", "on") == "on"

    def _list(self, args: list[str], dry: bool):
        if dry:
            return args in (["vms"], ["runningvms"])
        running = self.c.MachineState_Running
        return "".join(f'"{m.name}" {{{m.id}}}\n' for m in self.mgr.getArray(self.vbox, "machines")
                       if args == ["vms"] or m.state == running)

    def _guestproperty(self, args: list[str], dry: bool):
        if dry:
            return len(args) == 3 and args[0] == "get"
        value = self._machine(args[1]).getGuestPropertyValue(args[2])
        return f"Value: {value}\n" if value else "No value set!\n"


# --- choosing ---------------------------------------------------------------------------------

def backend(progress: Progress | None = None) -> VBoxManage | VBoxApi:
    """vboxapi's VirtualBoxManager when `import vboxapi` works (and $VNET_VBOXMANAGE does not
    name a binary), else VBoxManage. Says which, and why, through progress."""
    say = progress or (lambda _message: None)
    if os.environ.get(ENV_BINARY):
        chosen = VBoxManage(find_vboxmanage(), reason=f"{ENV_BINARY} is set")
    else:
        try:
            vboxapi = importlib.import_module("vboxapi")
        except ImportError:
            reason = "vboxapi is not importable"
        else:
            try:
                api = VBoxApi(vboxapi.VirtualBoxManager(None, None), reason="vboxapi imported")
                api.version()
            except Exception as exc:        # the glue imports, but XPCOM/COM does not start
                reason = f"vboxapi imported but VirtualBoxManager failed: {exc}"
            else:
                say(f"VirtualBox through {api.describe()}: {api.reason}")
                return api
        chosen = VBoxManage(find_vboxmanage(), reason=reason)
    say(f"VirtualBox through {chosen.describe()}: {chosen.reason}")
    return chosen


# --- small argv readers -----------------------------------------------------------------------

def _options(args: list[str]) -> dict[str, str] | None:
    """--key value / --key=value / --flag -> {key: value}; None when something is positional."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            return None
        key, eq, value = arg[2:].partition("=")
        if not eq and key not in ("register", "enable") and i + 1 < len(args) \
                and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 1
        opts[key] = value
        i += 1
    return opts


def _indexed_pairs(args: list[str]) -> list[tuple[str, int | None, str]] | None:
    """modifyvm options as (name, NIC index or None, value); None if one takes != 1 value."""
    pairs = []
    if len(args) % 2:
        return None
    for opt, value in zip(args[::2], args[1::2]):
        match = re.fullmatch(r"--([a-z-]+?)(\d*)", opt)
        if match is None:
            return None
        pairs.append((match.group(1), int(match.group(2)) if match.group(2) else None, value))
    return pairs

"""Apply a libvirt plan through libvirt-python (any URI, remote ones too), and find or remove
what a lab created by the tag in each object's <metadata>. No virsh.

The tag names the lab and its owner (provisioner/owner.py): discovery and teardown see only
this state root's objects; objects of an older vnet, tagged without an owner, are reported by
`unowned()` and never removed."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from ...errors import HypervisorError
from ...host.state import Target
from ...host.testpoints import pause_at
from ..base import Plan
from .render import XMLNS
from ...progress import Progress



def _libvirt():
    try:
        import libvirt
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise HypervisorError("libvirt-python is not installed", hint="pip install libvirt-python") from exc
    libvirt.registerErrorHandler(lambda *_: None, None)   # errors arrive as exceptions, not stderr
    return libvirt


def lab_tag(xml: str) -> dict | None:
    """The vnet tag of a libvirt object's XML, or None when vnet did not create it."""
    node = ET.fromstring(xml).find(f"./metadata/{{{XMLNS}}}lab")
    return dict(node.attrib) if node is not None else None


class LibvirtDriver:
    name = "libvirt"

    def __init__(self, target: Target, owner: str | None = None):
        self.target = target
        self._owner = owner
        self._conn = None

    @property
    def owner(self) -> str:
        """The owner id this driver acts for: the state root's, unless given."""
        if self._owner is None:
            from ...host.owner import owner_id

            self._owner = owner_id()
        return self._owner

    @property
    def conn(self):
        if self._conn is None:
            libvirt = _libvirt()
            try:
                self._conn = libvirt.open(self.target.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorError(f"cannot connect to libvirt at {self.target.uri}: "
                                      f"{exc.get_error_message()}",
                                      hint="is libvirtd running? `vnet sandbox up` starts a "
                                           "private one; `vnet doctor` checks the host") from exc
        return self._conn

    # --- apply ------------------------------------------------------------------------------

    def apply(self, plan: Plan, progress: Progress = print) -> list[str]:
        """Define and start everything; objects that already exist and run are left alone, so a
        second run changes nothing. Returns the names of domains it started."""
        libvirt = _libvirt()
        try:
            for doc in plan.documents:
                if doc.kind == "network":
                    self._ensure_network(doc.name, doc.text, plan.lab.name, progress)
            pause_at("define")                  # a test may kill `vnet up` here
            domains = [d for d in plan.documents if d.kind == "domain"]
            # QEMU start-up is mostly waiting on the host: start every VM at once.
            with ThreadPoolExecutor(max_workers=max(1, len(domains))) as pool:
                flags = list(pool.map(
                    lambda d: self._ensure_domain(d.name, d.text, plan.lab.name), domains))
            started = [d.name for d, new in zip(domains, flags) if new]
            if started:
                progress(f"started {len(started)} VM(s): {', '.join(started)}")
            return started
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"libvirt refused the lab: {exc.get_error_message()}") from exc

    def _ensure_network(self, name: str, xml: str, lab: str, progress: Progress) -> None:
        net = self._lookup(self.conn.networkLookupByName, name)
        if net is not None:
            self._check_owner(name, net.XMLDesc(0), lab)
        else:
            net = self.conn.networkDefineXML(xml)
            progress(f"defined network {name}")
        if not net.isActive():
            net.create()

    def _ensure_domain(self, name: str, xml: str, lab: str) -> bool:
        dom = self._lookup(self.conn.lookupByName, name)
        if dom is not None:
            self._check_owner(name, dom.XMLDesc(0), lab)
            if dom.isActive():
                return False
        dom = self.conn.defineXML(xml)     # (re)define: a stopped domain picks up the new plan
        dom.create()
        return True

    def _check_owner(self, name: str, xml: str, lab: str) -> None:
        tag = lab_tag(xml)
        if tag is None or tag.get("name") != lab or tag.get("owner") != self.owner:
            owner = "something other than vnet" if tag is None else \
                f"lab {tag['name']!r} of " + (f"owner {tag['owner']}" if tag.get("owner")
                                              else "an older vnet (no owner id)")
            raise HypervisorError(f"{name} already exists and belongs to {owner}; "
                                  "vnet leaves it alone", hint="choose another lab name")

    @staticmethod
    def _lookup(fn, name):
        libvirt = _libvirt()
        try:
            return fn(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK):
                return None
            raise

    # --- a running lab ----------------------------------------------------------------------

    def set_link(self, domain: str, mac: str, up: bool) -> None:
        """The link state of one interface of a running domain, as a cable pulled or plugged:
        the live interface XML with <link state='down'/> (or 'up') through
        virDomainUpdateDeviceFlags (libvirt's formatdomain "Modifying virtual link state")."""
        libvirt = _libvirt()
        dom = self._lookup(self.conn.lookupByName, domain)
        if dom is None or not dom.isActive():
            raise HypervisorError(f"cannot set a link of {domain}: it is not running")
        for iface in ET.fromstring(dom.XMLDesc(0)).findall("./devices/interface"):
            node = iface.find("mac")
            if node is not None and node.get("address", "").lower() == mac.lower():
                link = iface.find("link")
                if link is None:
                    link = ET.SubElement(iface, "link")
                link.set("state", "up" if up else "down")
                try:
                    dom.updateDeviceFlags(ET.tostring(iface, encoding="unicode"),
                                          libvirt.VIR_DOMAIN_AFFECT_LIVE)
                except libvirt.libvirtError as exc:
                    raise HypervisorError(f"libvirt refused the link state of {mac} on "
                                          f"{domain}: {exc.get_error_message()}") from exc
                return
        raise HypervisorError(f"{domain} has no interface with MAC {mac}")

    def interface_target(self, domain: str, mac: str) -> str | None:
        """The host-side device (<target dev/>) of a running domain's interface with this MAC."""
        dom = self._lookup(self.conn.lookupByName, domain)
        if dom is None or not dom.isActive():
            return None
        for iface in ET.fromstring(dom.XMLDesc(0)).findall("./devices/interface"):
            node, target = iface.find("mac"), iface.find("target")
            if node is not None and node.get("address", "").lower() == mac.lower():
                return None if target is None else target.get("dev")
        return None

    # --- discovery --------------------------------------------------------------------------

    def tagged(self) -> Iterator[tuple[str, str, object, dict]]:
        """(kind, name, object, tag) for every domain and network vnet created on this URI."""
        for dom in self.conn.listAllDomains(0):
            tag = lab_tag(dom.XMLDesc(0))
            if tag:
                yield "domain", dom.name(), dom, tag
        for net in self.conn.listAllNetworks(0):
            tag = lab_tag(net.XMLDesc(0))
            if tag:
                yield "network", net.name(), net, tag

    def mine(self) -> Iterator[tuple[str, str, object, dict]]:
        """The tagged objects of this driver's owner."""
        return (o for o in self.tagged() if o[3].get("owner") == self.owner)

    def labs(self) -> dict[str, dict[str, list[str]]]:
        """This owner's labs: lab -> {"domain": [names], "network": [names]}."""
        return _by_lab(self.mine())

    def unowned(self) -> dict[str, dict[str, list[str]]]:
        """Labs tagged by an older vnet, without an owner id: reported, never removed."""
        return _by_lab(o for o in self.tagged() if not o[3].get("owner"))

    def domain_state(self, name: str) -> str:
        libvirt = _libvirt()
        dom = self._lookup(self.conn.lookupByName, name)
        if dom is None:
            return "absent"
        state = dom.state()[0]
        return {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
                libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_CRASHED: "crashed"
                }.get(state, "other")

    def leases(self, network: str) -> list[dict]:
        net = self._lookup(self.conn.networkLookupByName, network)
        return [] if net is None or not net.isActive() else net.DHCPLeases()

    def hmp(self, domain: str, command: str) -> str:
        """A QEMU human-monitor command (used for user-network port forwards)."""
        import libvirt_qemu

        dom = self.conn.lookupByName(domain)
        return libvirt_qemu.qemuMonitorCommand(
            dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)

    # --- teardown ---------------------------------------------------------------------------

    def destroy(self, lab: str, progress: Progress = print) -> list[str]:
        """Remove every domain and network tagged with this lab and owner, and nothing else."""
        libvirt = _libvirt()
        removed = []
        objects = [o for o in self.mine() if o[3].get("name") == lab]

        def remove(item) -> str:
            kind, name, obj, _ = item
            try:
                if obj.isActive():
                    obj.destroy()
                obj.undefine()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN,
                                                libvirt.VIR_ERR_NO_NETWORK):
                    raise HypervisorError(f"cannot remove {kind} {name}: "
                                          f"{exc.get_error_message()}") from exc
            return f"{kind} {name}"

        # Domains first (in parallel: stopping QEMU is waiting), then the networks they used.
        for kind in ("domain", "network"):
            batch = [o for o in objects if o[0] == kind]
            with ThreadPoolExecutor(max_workers=max(1, len(batch))) as pool:
                removed += list(pool.map(remove, batch))
        if removed:
            progress(f"removed {', '.join(removed)}")
        return removed


def _by_lab(objects) -> dict[str, dict[str, list[str]]]:
    result: dict[str, dict[str, list[str]]] = {}
    for kind, name, _, tag in objects:
        result.setdefault(tag["name"], {"domain": [], "network": []})[kind].append(name)
    return result

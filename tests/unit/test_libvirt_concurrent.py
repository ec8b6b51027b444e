"""Two labs at once on one libvirt (vnet matrix --jobs), with a fake connection standing in for
libvirt: apply starts a lab's networks at once, and discovery skips what another lab removed."""
import threading
from types import SimpleNamespace

from provisioner.drivers.base import Document
from provisioner.drivers.libvirt.connection import LibvirtDriver
from provisioner.host.state import Target


class Net:
    def __init__(self, barrier):
        self.barrier, self.active = barrier, False

    def isActive(self):
        return self.active

    def create(self):
        self.barrier.wait()        # returns only when the other network starts at the same time
        self.active = True


class Conn:
    def __init__(self):
        self.barrier = threading.Barrier(2, timeout=10)
        self.defined = []

    def networkLookupByName(self, name):
        import libvirt
        raise libvirt.libvirtError(f"no network {name}")

    def networkDefineXML(self, xml):
        self.defined.append(xml)
        return Net(self.barrier)


def test_networks_start_at_once(monkeypatch):
    import libvirt
    monkeypatch.setattr(libvirt.libvirtError, "get_error_code",
                        lambda self: libvirt.VIR_ERR_NO_NETWORK)
    driver = LibvirtDriver(Target(uri="qemu:///x"), owner="o")
    driver._conn = Conn()
    docs = (Document("network", "vnet-lab-net", "<network/>"),
            Document("network", "vnet-lab-mgmt", "<network/>"))
    plan = SimpleNamespace(documents=docs, lab=SimpleNamespace(name="lab"))
    assert driver.apply(plan, progress=lambda m: None) == []
    assert len(driver._conn.defined) == 2


class Gone:
    """A domain listed a moment before another lab's destroy removed it."""

    def XMLDesc(self, flags):
        import libvirt
        raise libvirt.libvirtError("Domain not found: no domain with matching uuid")


class Tagged:
    def __init__(self, name, lab, owner):
        self._name = name
        self.xml = (f'<domain><name>{name}</name><metadata><vnet:lab xmlns:vnet='
                    f'"https://vnet.dev/xmlns/lab/1" name="{lab}" owner="{owner}" vm="vm1"/>'
                    '</metadata></domain>')

    def XMLDesc(self, flags):
        return self.xml

    def name(self):
        return self._name


def test_discovery_skips_an_object_removed_after_it_was_listed(monkeypatch):
    import libvirt
    monkeypatch.setattr(libvirt.libvirtError, "get_error_code",
                        lambda self: libvirt.VIR_ERR_NO_DOMAIN)
    driver = LibvirtDriver(Target(uri="qemu:///x"), owner="o")
    driver._conn = SimpleNamespace(listAllDomains=lambda f: [Gone(), Tagged("vnet-a-vm1", "a", "o")],
                                   listAllNetworks=lambda f: [])
    assert driver.labs() == {"a": {"domain": ["vnet-a-vm1"], "network": []}}

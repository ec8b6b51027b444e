"""LibvirtDriver.apply starts a lab's networks at once (each start waits on its dnsmasq and
firewall rules), as it already starts the domains; a fake connection stands in for libvirt."""
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

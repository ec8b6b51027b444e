"""A realistic verification result for the HTML report's tests and for docs/report.png: the
default natnetwork lab (two VMs, virtio and e1000, SSH and echo forwards) in a sandbox, every
cell as the mode promises except one (vm1 -> vm2), whose diagnosis is what the prober says."""
from __future__ import annotations

from ipaddress import IPv4Address

from provisioner import checks, labfile, topology
from provisioner.defaultlab import default_lab
from provisioner.model import Backend

ENDS = checks.Endpoints(host_listener_port=24817, internet_ip="203.0.113.1",
                        host_uplink_ip="203.0.113.2", mgmt_host_ip="192.168.63.1")
RED_DETAIL = ("timed out after 3.0s: no answer from 192.168.150.11:7 through eth0 "
              "(52:54:00:aa:00:01); a firewall drops it")


def sample_result(red: bool = True) -> dict:
    data = default_lab("natnetwork", "virtio", 2, "web")
    data["networks"][0]["subnet"] = "192.168.150.0/24"
    data["vms"][1]["nics"][0]["model"] = "e1000"
    for i, vm in enumerate(data["vms"]):
        vm["nics"][0].update(mac=f"52:54:00:aa:00:0{i + 1}", ip=f"192.168.150.1{i}")
    in_sandbox = labfile.Defaults(forward_host_ip=IPv4Address(ENDS.host_uplink_ip))
    lab = labfile.resolve(data, in_sandbox, source="sample")
    cells = checks.build(lab, Backend.LIBVIRT, ENDS)
    for cell in cells:
        cell.observed = cell.expected
        cell.detail = ("refused: nothing answered, as the mode promises" if cell.expected == "fail"
                       else "answered with this probe's nonce")
        if cell.kind == "nic_model":
            cell.detail = f"guest driver {cell.probe['driver']}, expected {cell.probe['driver']}"
    if red:
        bad = next(c for c in cells if c.kind == "vm_to_vm" and c.source == "vm1")
        bad.observed, bad.detail = "fail", RED_DETAIL
    control = {"vm1": "192.168.63.10", "vm2": "192.168.63.11"}
    return {"lab": lab.name, "backend": "libvirt", "inventory": "vnet",
            "ok": all(c.ok for c in cells), "checks": [c.as_dict() for c in cells],
            "timings": {"define": 0.4, "boot": 9.1, "verify": 6.3, "total": 15.8},
            "notes": [], "topology": topology.of(lab, control)}

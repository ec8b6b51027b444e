"""SR-IOV: the lab's physical function must have virtual functions configured
(/sys/class/net/PF/device/sriov_numvfs > 0, at most sriov_totalvfs), enough of them for its
NICs, and the IOMMU must be on for VFIO to pass a VF through. A vf_address NIC must name a
PCI device that is a VF (it has a physfn link)."""
from __future__ import annotations

from collections import Counter

from ..base import Finding, Rule, error, ok
from ..host import Host

ID = "sriov"
NEEDS = "an SR-IOV capable NIC with VFs configured"


def capable_pfs(host: Host) -> list[str]:
    """Network interfaces here that can have VFs."""
    return [dev for dev in host.listdir("/sys/class/net") or []
            if host.read(f"/sys/class/net/{dev}/device/sriov_totalvfs") is not None]


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def check(host: Host) -> list[Finding]:
    nics = host.lab_nics("sriov")
    findings = []
    wanted = Counter(nic.pf for _, nic in nics if nic.pf)
    for pf, count in sorted(wanted.items()):
        base = f"/sys/class/net/{pf}/device"
        where = f"SR-IOV PF {pf} ({count} NIC(s) of lab {host.lab.name})"
        capable = capable_pfs(host)
        others = f"SR-IOV capable NICs here: {', '.join(capable) or 'none'}"
        total, numvfs = _int(host.read(f"{base}/sriov_totalvfs")), _int(host.read(f"{base}/sriov_numvfs"))
        if not host.exists(f"/sys/class/net/{pf}"):
            findings.append(error(f"{ID}:{pf}", f"no hardware: {where}: there is no network "
                                  f"interface {pf} on this machine ({others})",
                                  f"name an SR-IOV capable NIC in pf:, or run the lab on a host "
                                  f"with one ({NEEDS})"))
        elif total is None:
            findings.append(error(f"{ID}:{pf}", f"no hardware: {where}: {pf} is not SR-IOV "
                                  f"capable (no {base}/sriov_totalvfs; {others})",
                                  f"use an SR-IOV capable NIC ({NEEDS}), and enable SR-IOV in "
                                  "its firmware/BIOS"))
        elif not numvfs:
            findings.append(error(f"{ID}:{pf}", f"no hardware: {where}: the PF has no VFs "
                                  f"configured (sriov_numvfs=0 of sriov_totalvfs={total})",
                                  f"echo {min(max(count, 1), total) if total else count} > "
                                  f"{base}/sriov_numvfs (as root)"))
        elif numvfs < count:
            findings.append(error(f"{ID}:{pf}", f"no hardware: {where}: only {numvfs} VF(s) "
                                  f"configured for {count} NIC(s)",
                                  f"echo 0 > {base}/sriov_numvfs; echo {min(count, total)} > "
                                  f"{base}/sriov_numvfs (as root)"))
        else:
            findings.append(ok(f"{ID}:{pf}", f"{where}: {numvfs} of {total} VFs configured"))
    for vm, nic in nics:
        if nic.vf_address is None:
            continue
        dev = f"/sys/bus/pci/devices/{nic.vf_address}"
        if not host.exists(f"{dev}/physfn"):
            what = "does not exist" if not host.exists(dev) else "is not an SR-IOV VF (no physfn)"
            findings.append(error(f"{ID}:{nic.vf_address}", f"no hardware: VF {nic.vf_address} "
                                  f"of VM {vm.name} {what} on this machine",
                                  "configure VFs on the PF (echo N > /sys/class/net/PF/device/"
                                  "sriov_numvfs) and use one of their addresses (lspci | grep "
                                  "'Virtual Function')"))
        else:
            findings.append(ok(f"{ID}:{nic.vf_address}", f"VF {nic.vf_address} of VM {vm.name} "
                                                          "exists"))
    if not any(f.severity == "error" for f in findings) and not host.listdir("/sys/kernel/iommu_groups"):
        findings.append(error(f"{ID}:iommu", "no hardware: the IOMMU is off (no "
                              "/sys/kernel/iommu_groups entries), so VFIO cannot pass a VF to a "
                              "guest", "enable VT-d/AMD-Vi in the firmware and boot with "
                              "intel_iommu=on iommu=pt (or amd_iommu=on)"))
    return findings


RULE = Rule(id=ID, title="SR-IOV PFs have VFs for the lab", check=check, order=70,
            applies=lambda host: bool(host.lab_nics("sriov")), scope="labs with sriov NICs",
            preflight=True, hardware=True)

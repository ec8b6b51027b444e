"""Open vSwitch for `switch: openvswitch` networks: installed, running where the lab runs (a
sandbox runs its own, host/ovs.py), and which datapath its bridges use, and why."""
from __future__ import annotations

from ...host.ovs import DAEMONS, datapath
from ..base import Finding, Rule, error, ok, warn
from ..host import Host

ID = "openvswitch"
FIX = "apt-get install openvswitch-switch"


def _wanted(host: Host) -> bool:
    return host.lab is not None and any(n.switch == "openvswitch" for n in host.lab.networks)


def check(host: Host) -> list[Finding]:
    make = error if _wanted(host) else warn
    missing = [t for t in (*DAEMONS, "ovs-vsctl", "ovs-ofctl") if host.which(t) is None]
    if missing and not _wanted(host):
        return [ok(ID, "Open vSwitch is not installed; only switch: openvswitch networks need "
                   f"it ({FIX})")]
    if missing:
        return [make(ID, f"Open vSwitch is not installed ({', '.join(missing)} missing): "
                     "switch: openvswitch networks cannot be made here", FIX)]
    kind, why = datapath(host.exists)
    findings = [ok(f"{ID}:datapath", f"bridges use the {kind} datapath: {why}")]
    if host.sandbox:
        from ...host import sandbox

        sock = sandbox.describe(host.sandbox).state_dir / "ovs" / "run" / "db.sock"
        out = host.run(["ovs-vsctl", f"--db=unix:{sock}", "--timeout=5", "--no-wait", "show"],
                       in_target=False)
        if out is None or out.rc != 0:
            findings.append(make(ID, f"sandbox {host.sandbox} runs no Open vSwitch (it was made "
                                 "before Open vSwitch was installed, or its daemons died)",
                                 f"vnet sandbox down {host.sandbox} && vnet sandbox up "
                                 f"{host.sandbox}"))
        else:
            findings.append(ok(ID, f"sandbox {host.sandbox} runs its own ovsdb-server and "
                               "ovs-vswitchd (private run and database directories)"))
    else:
        findings.append(ok(ID, "outside a sandbox vnet uses this host's running Open vSwitch "
                           "and never restarts it"))
    return findings


# Not a preflight rule: `vnet up` finds an unreachable Open vSwitch itself (ovsbridge.create),
# and a lab without OpenFlow networks should not pay for the look.
RULE = Rule(id=ID, title="Open vSwitch for OpenFlow networks", check=check, order=55)

"""Port-forward cells of a lab with `hosts:` are probed where the forward is served (issue 13,
lab/forwardhosts.py): host->VM from the serving host's own network namespace, Internet->VM to
the serving host's address. A forward served on the first host (and every forward of a
single-host lab) is probed as before: from the host namespace vnet runs in, at the address the
sandbox's Internet reaches it on (Endpoints.host_uplink_ip).

The probe from another host runs under the runner "host.HOST" (its nonces carry that origin,
so the guest's hold waits for them), in the namespace the lab's record names for that host."""
from __future__ import annotations

from ..host import state
from ..host.state import Target
from ..lab.forwardhosts import reach_address, served_on
from ..lab.model import Lab, PortForward

HOST_AT = "host."


def probe_point(lab: Lab, pf: PortForward, uplink: str, host_runner: str) -> tuple[str, str]:
    """(address the probes go to, runner of the host-side probe) of one forward; `uplink` and
    `host_runner`: the first host's (Endpoints.host_uplink_ip, checks.HOST)."""
    host = served_on(lab, pf)
    if host is None or host == lab.hosts[0].name:
        return uplink, host_runner
    return str(reach_address(lab, pf)), f"{HOST_AT}{host}"


def side_namespaces(lab: Lab, target: Target, runners: set[str]) -> dict[str, str | None]:
    """runner "host.HOST" -> the network namespace of HOST (from the lab's record), for the
    runners the cells use."""
    wanted = sorted(r for r in runners if r.startswith(HOST_AT))
    if not wanted:
        return {}
    hosts = (state.read(target, lab.name) or {}).get("hosts", {})
    return {r: hosts.get(r[len(HOST_AT):], {}).get("netns") for r in wanted}

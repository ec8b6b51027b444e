"""Forwards proven without a service, and negative controls: each test changes the running lab,
requires exactly the matching cells to turn red, and puts the lab back.

The lab: two VMs, each with a natnetwork NIC and a nat NIC. The natnetwork forwards
18081 -> vm1:8080 (TCP) and 18069 -> vm2:6969 (UDP), the nat one 5421 -> vm2:5353 (UDP): nothing
listens on those guest ports, so vnet's temporary listeners answer for the duration of the
check. The nat one also forwards 2421 -> vm1:22 (proven by logging in and reading the hostname).
"""
import dataclasses

import pytest

from provisioner.host import forwarding, netns, runner, state
from provisioner.lab import loader as labfile
from provisioner.lab.model import DeclaredCheck
from provisioner.drivers.libvirt import lifecycle
from provisioner.verify import run as verifier
from provisioner.drivers.libvirt.connection import LibvirtDriver
from provisioner.drivers.libvirt.render import LibvirtRenderer, object_name
from tests.integration.conftest import guest_ssh, iptables_rule

pytestmark = pytest.mark.integration
quiet = lambda message: None  # noqa: E731

LAB = {"name": "ctl",
       "networks": [
           {"name": "nn", "mode": "natnetwork", "port_forwards": [
               {"name": "web", "proto": "tcp", "host_port": 18081, "vm": "vm1",
                "guest_port": 8080},
               {"name": "tftp", "proto": "udp", "host_port": 18069, "vm": "vm2",
                "guest_port": 6969}]},
           {"name": "nat", "mode": "nat", "port_forwards": [
               {"name": "ssh", "proto": "tcp", "host_port": 2421, "vm": "vm1",
                "guest_port": 22},
               {"name": "dns", "proto": "udp", "host_port": 5421, "vm": "vm2",
                "guest_port": 5353}]}],
       "vms": [{"name": "vm1", "nics": [{"network": "nn"}, {"network": "nat"}]},
               {"name": "vm2", "nics": [{"network": "nn"}, {"network": "nat"}]}]}


@pytest.fixture(scope="module")
def ctl(lab_sandbox):
    target = lifecycle.target_for(lab_sandbox.name, None)
    lab = labfile.resolve(LAB, labfile.sandbox_defaults(lab_sandbox))
    try:
        lifecycle.up(lab, target, quiet)
        yield lab_sandbox, target, lab
    finally:
        lifecycle.destroy(lab.name, target, quiet)


def restart_proxy(target, lab_dir, rules):
    """The lab's port proxy, ended (and gone: its ports are free again), then started anew with
    these rules; its old log goes, so "ready" means the new one is."""
    import time

    old = forwarding.proxy_pid(lab_dir)
    forwarding.stop_proxy(lab_dir)
    deadline = time.monotonic() + 10
    while old and netns.pid_alive(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    (lab_dir / "portproxy.log").unlink(missing_ok=True)
    forwarding.start_proxy(target, lab_dir, rules)


def why(result) -> list[str]:
    """The red cells with their diagnosis, for an assertion's message."""
    return [f"{c['network']} {c['kind']} {c['source']}->{c['target']}: {c['observed']} "
            f"({c['detail']})" for c in result["checks"] if not c["ok"]]


def red_cells(result) -> set[tuple]:
    return {(c["network"], c["kind"], c["source"], c["target"]) for c in result["checks"]
            if not c["ok"]}


def cells(result, **match) -> set[tuple]:
    return {(c["network"], c["kind"], c["source"], c["target"]) for c in result["checks"]
            if all(c[k] == v for k, v in match.items())}


def verified_green(lab, target):
    result = verifier.verify(lab, target, quiet)
    assert result["ok"], [f"{c['kind']} {c['source']}->{c['target']}: {c['detail']}"
                          for c in result["checks"] if not c["ok"]]
    return result


def test_forward_to_a_port_with_no_service_verifies_green(ctl):
    _, target, lab = ctl
    result = verified_green(lab, target)
    # a refusal confirmed a negative cell only with the echo's socket stamped before it and
    # seen after it (or vnet's listener running throughout)
    refused = [c for c in result["checks"] if c["detail"].startswith("refused")]
    assert refused and all("stamped listening on the console, before the attempt" in c["detail"]
                           or "vnet's listener ran" in c["detail"] for c in refused), refused
    free = [c for c in result["checks"] if c["kind"] == "port_forward"
            and any(f":{port} " in c["target"] for port in (8080, 6969, 5353))]
    assert len(free) == 6 and {c["source"] for c in free} == {"host", "internet"}
    assert all("temporary listener" in c["detail"] for c in free), free
    ssh = [c for c in result["checks"] if c["kind"] == "port_forward" and ":22 " in c["target"]]
    assert ssh and all("hostname vm1" in c["detail"] for c in ssh), ssh


def test_forwards_pointed_at_the_other_vm_turn_red(ctl):
    """(b) The proxy's 18081 and QEMU's 2421 now lead to vm2: only those forward cells go red
    (vm2 holds nothing on 8080; the SSH login reads "vm2")."""
    box, target, lab = ctl
    lab_dir = state.lab_dir(target, lab.name)
    plan = LibvirtRenderer().plan(lab)
    vm2_nn = str(next(n for n in lab.vm("vm2").nics if n.network == "nn").ip.ip)
    driver = LibvirtDriver(target)
    [ssh] = [r for r in plan.extra["hostfwd"] if r["name"] == "ssh"]
    to_vm2 = dict(ssh, domain=object_name(lab.name, "vm2"))       # nat is NIC 1 on both VMs
    # hostfwd_remove [netdev] [tcp|udp]:[hostaddr]:hostport (QEMU's hmp-commands.hx)
    remove = f"hostfwd_remove {ssh['netdev']} tcp:{ssh['host_ip']}:{ssh['host_port']}"
    try:
        restart_proxy(target, lab_dir, [dict(r, guest_ip=vm2_nn) if r["name"] == "web" else r
                                        for r in plan.extra["proxies"]])
        driver.hmp(ssh["domain"], remove)
        forwarding.add_hostfwds(driver, [to_vm2])
        result = verifier.verify(lab, target, quiet)
        retargeted = {c for c in cells(result, kind="port_forward")
                      if ":8080 " in c[3] or ":22 " in c[3]}
        assert len(retargeted) == 4 and red_cells(result) == retargeted, why(result)
        ssh_cells = [c for c in result["checks"] if ":22 " in c["target"]]
        assert all("vm2" in c["detail"] for c in ssh_cells), ssh_cells
    finally:
        driver.hmp(to_vm2["domain"], remove)
        forwarding.add_hostfwds(driver, [ssh])
        restart_proxy(target, lab_dir, plan.extra["proxies"])


def test_natnetwork_opened_to_the_internet_turns_red(ctl):
    """(a) A FORWARD accept rule on the sandbox host lets the Internet in: only the natnetwork's
    Internet->VM cells go red (observed pass)."""
    box, target, lab = ctl
    subnet = str(lab.network("nn").subnet)
    rule = ["iptables", "-I", "FORWARD", "1", "-d", subnet, "-j", "ACCEPT"]
    try:
        runner.run(netns.netns_argv(box.host_netns, rule))
        result = verifier.verify(lab, target, quiet)
        assert red_cells(result) == cells(result, network="nn", kind="internet_to_vm"), why(result)
        assert {c["observed"] for c in result["checks"] if not c["ok"]} == {"pass"}
    finally:
        runner.run(netns.netns_argv(box.host_netns, ["iptables", "-D", "FORWARD", "-d", subnet,
                                                     "-j", "ACCEPT"]), check=False)


def test_an_open_path_to_a_vm_whose_echo_is_down_is_not_confirmed_by_its_refusal(ctl):
    """(a') As (a), with vm1's echo (TCP 7) stopped: the Internet's probe now reaches vm1,
    whose own stack refuses the idle port. A refusal is not isolation unless the port
    listened all along (verify/refusals.py), so vm1's Internet->VM cell goes red as an error
    instead of staying green, and so do the other cells aimed at vm1's echo; vm2's, still
    answered, are a leak (pass). The lab also declares vm2 -> vm1:7 `expect: fail` (in place
    of the VM<->VM cell), so vm1 lists its sockets once more after every guest's probes (the
    playbook's last task): refused by vm1 itself, that cell is red too."""
    box, target, lab = ctl
    lab = dataclasses.replace(lab, checks=(DeclaredCheck("vm2", "vm1", 7, "tcp", "fail", "nn"),))
    subnet = str(lab.network("nn").subnet)
    vm1 = str(next(n for n in lab.vm("vm1").nics if n.network == "nn").ip.ip)
    # the image's echod (its restart loop) first, then the echo (nc -ll): nothing listens on 7
    stop = 'for p in $(pidof nc); do set -- $(cat /proc/$p/stat); kill $4 $p; done'
    restart = "setsid /usr/lib/vnet/echod </dev/null >/dev/null 2>&1 &"   # stamps its socket
    try:
        guest_ssh(target, lab.name, "vm1", stop)
        with iptables_rule(box.host_netns, ["FORWARD", "-d", subnet, "-j", "ACCEPT"]):
            result = verifier.verify(lab, target, quiet)
        to_vm1 = {c for c in cells(result, network="nn") if vm1 in c[3]}
        assert red_cells(result) == to_vm1 | cells(result, network="nn", kind="internet_to_vm"), \
            why(result)
        [hidden] = [c for c in result["checks"] if c["kind"] == "internet_to_vm"
                    and c["network"] == "nn" and vm1 in c["target"]]
        assert hidden["observed"] == "error" and "may be vm1's own" in hidden["detail"], hidden
        [declared] = [c for c in result["checks"] if c.get("declared")]
        assert declared["observed"] == "error" and "nothing listened" in declared["detail"]
        assert listed_again(target, lab.name) == {"vm1"}     # vm2 is probed by no guest
    finally:
        guest_ssh(target, lab.name, "vm1", restart)


def listed_again(target, lab_name: str) -> set[str]:
    """The guests that ran the playbook's last task (their sockets listed after every guest's
    probes), from ansible-runner's event files of the lab's newest run."""
    import json

    runs = sorted((state.lab_dir(target, lab_name) / "ansible" / "artifacts").iterdir(),
                  key=lambda d: d.stat().st_mtime)
    events = [json.loads(f.read_text()) for f in (runs[-1] / "job_events").glob("*.json")]
    return {e["event_data"]["host"] for e in events if e.get("event") == "runner_on_ok"
            and e["event_data"].get("task", "").startswith("List the listening sockets")}


def test_nic_model_swapped_under_the_lab_turns_red(ctl):
    """(d) The lab now says e1000 for vm2's natnetwork NIC; the VM still runs virtio: only that
    NIC-model cell goes red."""
    _, target, lab = ctl
    vm2 = lab.vm("vm2")
    nics = tuple(dataclasses.replace(n, model="e1000") if n.network == "nn" else n
                 for n in vm2.nics)
    swapped = dataclasses.replace(lab, vms=(lab.vm("vm1"), dataclasses.replace(vm2, nics=nics)))
    result = verifier.verify(swapped, target, quiet)
    assert red_cells(result) == cells(result, network="nn", kind="nic_model", source="vm2"), why(result)
    [red] = [c for c in result["checks"] if not c["ok"]]
    assert "virtio_net" in red["detail"] and "e1000" in red["detail"]


def test_a_cut_lab_nic_turns_its_cells_red_while_management_stays_up(ctl):
    """(c) vm1's natnetwork NIC loses its link (libvirt's interface link state); the management
    NIC stays up, so Ansible still runs: every positive cell of that NIC goes red, the rest of
    the matrix stays green, so the management network carries no probe."""
    box, target, lab = ctl
    nic = next(n for n in lab.vm("vm1").nics if n.network == "nn")
    domain = object_name(lab.name, "vm1")

    def setlink(state_):
        runner.run(["virsh", "-c", box.uri, "domif-setlink", domain, nic.mac, state_])
    try:
        setlink("down")
        result = verifier.verify(lab, target, quiet)
        ip = str(nic.ip.ip)
        expected = {(c["network"], c["kind"], c["source"], c["target"])
                    for c in result["checks"] if c["network"] == "nn" and c["expected"] == "pass"
                    and c["kind"] != "nic_model"
                    and (c["source"] == "vm1" or ip in c["target"] or "vm1:" in c["target"])}
        assert expected and red_cells(result) == expected, why(result)
        assert all(c["detail"] != "Ansible could not run on vm1" for c in result["checks"])
    finally:
        setlink("up")

"""Negative control for the three probe outcomes on a real lab: a forbidden path that connects,
but to the wrong endpoint, is a leak and turns the cell red. Before, a probe that connected and
heard the wrong name counted as "fail", which confirmed the negative cell: the leak stayed green.
"""
import pytest

from provisioner import labfile, lifecycle, netns, runner
from provisioner import verify as verifier
from provisioner.defaultlab import default_lab

pytestmark = pytest.mark.integration
quiet = lambda message: None  # noqa: E731


def test_a_vm_to_internet_leak_to_the_wrong_endpoint_turns_red(lab_sandbox):
    """hostonly promises VM->Internet "no". The host DNATs the guests' TCP to the Internet
    address onto its own address on the network: the probe connects, and the host's listener,
    not the Internet's, answers. Only the VM->Internet cells may turn red, each as a leak."""
    target = lifecycle.target_for(lab_sandbox.name, None)
    lab = labfile.resolve(default_lab("hostonly", name="leak"), labfile.sandbox_defaults(lab_sandbox))
    net = lab.networks[0]
    rule = ["PREROUTING", "-s", str(net.subnet), "-d", lab_sandbox.internet_ip, "-p", "tcp",
            "-j", "DNAT", "--to-destination", str(net.host_ip)]
    try:
        lifecycle.up(lab, target, quiet)
        assert verifier.verify(lab, target, quiet)["ok"]
        runner.run(netns.netns_argv(lab_sandbox.host_netns, ["iptables", "-t", "nat", "-I", *rule]))
        result = verifier.verify(lab, target, quiet)
        red = [c for c in result["checks"] if not c["ok"]]
        assert {c["kind"] for c in red} == {"vm_to_internet"}, result["checks"]
        assert len(red) == len(lab.vms)
        for c in red:
            assert c["expected"] == "fail" and c["observed"] == "error"
            assert c["detail"] == "leak: answered by host instead of internet"
        assert verifier.exit_code(result) == 1
    finally:
        runner.run(netns.netns_argv(lab_sandbox.host_netns, ["iptables", "-t", "nat", "-D", *rule]),
                   check=False)
        lifecycle.destroy(lab.name, target, quiet)

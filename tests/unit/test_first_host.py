"""The first host of a lab with `hosts:` outside a vnet sandbox is this machine (README "Several
hosts"): a `qemu:///system` URI (its socket may be named), the target's; its host-side steps run
in vnet's own network namespace (HostAccess(here=True): the argv as is, the underlay echo from
here), a forward it serves is not refused. What is still refused is one line, exit 2, before
anything is created: a first host that is not this machine's system libvirtd, a later host that
is neither remote nor a sandbox's, and a forward served on a remote host."""
import copy

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.drivers.libvirt import hostforwards, multihost, remotehosts
from provisioner.errors import ExitStatus, Unsupported
from provisioner.host import hostaccess, vxlan
from provisioner.host.hostaccess import HostAccess
from provisioner.host.state import Target
from provisioner.lab import loader as labfile

from .test_hosts_labfile import ISSUE_LAB

HERE = "qemu:///system?socket=/run/vnet-test/libvirt-sock"


def _lab(first=HERE, second="qemu+ssh://root@hv2.example/system", forward_on="lan"):
    data = copy.deepcopy(ISSUE_LAB)
    data["hosts"][0]["uri"], data["hosts"][1]["uri"] = first, second
    if forward_on:
        data["networks"][0]["port_forwards"] = [{"name": "web", "proto": "tcp",
                                                 "host_port": 18181, "vm": "b",
                                                 "guest_port": 8080}]
    data["networks"][0]["home"] = "hv1" if forward_on != "hv2" else "hv2"
    return labfile.resolve(data)


@pytest.mark.parametrize("first", ["qemu:///system", HERE, "qemu+unix:///system"])
def test_outside_a_sandbox_the_first_host_is_this_machine(first):
    lab = _lab(first)
    targets = multihost.host_targets(lab, Target(uri=first))
    assert targets["hv1"] == Target(uri=first)                 # no namespace: vnet's own
    assert targets["hv2"] == Target(uri="qemu+ssh://root@hv2.example/system")
    assert remotehosts.is_here(targets["hv1"]) and not remotehosts.is_remote(targets["hv1"])
    assert remotehosts.access(targets["hv1"]) == HostAccess(here=True)
    assert remotehosts.access(targets["hv2"]).remote
    # a forward served on this machine is checked and proxied here, as in a one-host --uri lab
    hostforwards.remote_refusal(lab, targets)


def test_here_runs_the_argv_as_is_and_echoes_from_vnets_namespace(monkeypatch):
    here = HostAccess(here=True)
    assert here.argv(["ip", "link", "show"]) == ["ip", "link", "show"]
    assert here.describe() == "this machine"
    with pytest.raises(ValueError):              # no namespace and not said to be here
        HostAccess().argv(["ip", "link", "show"])
    echoed = []
    monkeypatch.setattr(vxlan, "echo", lambda address: echoed.append(address) or True)
    monkeypatch.setattr(vxlan, "run_in_netns", lambda *a: pytest.fail("entered a namespace"))
    assert vxlan.reaches(here, "198.51.100.3") and echoed == ["198.51.100.3"]


def test_a_sandbox_host_keeps_its_namespace_and_no_namespace_elsewhere_is_not_here():
    assert remotehosts.access(Target(uri=HERE, netns="vnet-s1-host")) == \
        HostAccess(netns="vnet-s1-host")
    for uri in ("qemu+tcp://hv1.example/system", "qemu:///session",
                "qemu+ssh://root@hv1.example/system"):
        assert not remotehosts.is_here(Target(uri=uri))


@pytest.mark.parametrize("first, says", [
    ("qemu+ssh://root@hv1.example/system", "hosts.hv1: qemu+ssh://root@hv1.example/system is "
                                           "not this machine's libvirtd"),
    ("qemu+tcp://hv1.example/system", "hosts.hv1: qemu+tcp://hv1.example/system is not this "
                                      "machine's libvirtd"),
    ("qemu:///session", "hosts.hv1: qemu:///session is not this machine's libvirtd"),
])
def test_a_first_host_that_is_not_this_machines_system_libvirtd_is_refused(first, says):
    with pytest.raises(Unsupported) as exc:
        multihost.host_targets(_lab(first), Target(uri=first))
    assert exc.value.message.startswith(says)
    assert f"its URI must be {hostaccess.LOCAL}" in exc.value.message
    assert exc.value.status == ExitStatus.BAD_INPUT and "\n" not in exc.value.message


def test_still_refused_a_later_local_host_a_target_that_is_not_the_first_a_remote_forward():
    with pytest.raises(Unsupported, match=r"^hosts.hv2: qemu:///system\?socket=/x is neither a "
                                          r"host of this vnet sandbox nor a remote host"):
        multihost.host_targets(_lab(second="qemu:///system?socket=/x"), Target(uri=HERE))
    with pytest.raises(Unsupported, match="first host is where vnet reaches the guests from, "
                                          r"so it must be this target \(qemu:///system\)"):
        multihost.host_targets(_lab(), Target(uri="qemu:///system"))
    lab = _lab(forward_on="hv2")                  # homed on hv2, a remote host: its forward
    with pytest.raises(Unsupported, match="served on hv2, a host outside a vnet sandbox"):
        hostforwards.remote_refusal(lab, multihost.host_targets(lab, Target(uri=HERE)))


def test_in_a_sandbox_the_first_host_is_still_one_of_its_hosts():
    from provisioner.host import sandbox

    lab = _lab("qemu:///system")
    with pytest.raises(Unsupported, match=r"^hosts.hv1: qemu:///system is not a host of "
                                          "sandbox s1; the first host, where vnet runs, is its "
                                          "hv1"):
        multihost.host_targets(lab, Target(uri="qemu:///system", sandbox="s1",
                                           netns=sandbox.describe("s1").host_netns))


def test_vnet_up_refuses_a_remote_first_host_in_one_line_and_creates_nothing(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    lab_file = tmp_path / "lab.yaml"
    data = copy.deepcopy(ISSUE_LAB)                  # both hosts qemu+ssh://
    import yaml
    lab_file.write_text(yaml.safe_dump(data))
    uri = data["hosts"][0]["uri"]
    result = CliRunner().invoke(main, ["up", str(lab_file), "--uri", uri])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("vnet: error:")]
    assert len(lines) == 1 and "hosts.hv1:" in lines[0] and "not this machine's" in lines[0]
    assert not (tmp_path / "state").exists()


def test_removing_the_last_lab_of_a_uri_leaves_no_directory_for_it(tmp_path, monkeypatch):
    from provisioner.host import state

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    target = Target(uri=HERE)
    state.save(target, "one", {"lab": "one"})
    state.save(target, "two", {"lab": "two"})
    state.remove(target, "one")
    assert state.labs_of(target) == ["two"]              # another lab: the directory stays
    state.remove(target, "two")
    assert not state.target_dir(target).exists()
    assert (tmp_path / "labs").is_dir()


def test_gc_on_this_machine_removes_the_vxlan_devices_of_labs_recorded_nowhere(tmp_path,
                                                                              monkeypatch):
    """`vnet gc` with a qemu:///system target: this machine's VXLAN devices (run here, no
    namespace) of this owner's lab with no record under any target go; a recorded lab's, and
    another owner's, stay."""
    import json

    from provisioner.host import runner, state

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    from provisioner.host.owner import owner_id

    state.save(Target(uri="qemu:///system?socket=/other"), "kept", {"lab": "kept"})
    me = owner_id()
    shown = [{"ifname": n, "ifalias": a, "linkinfo": {"info_data": {"id": i}}}
             for n, a, i in (("vxgone1", f"vnet:{me}:gone:lan", 1),
                             ("vxgone2", f"vnet:{me}:gone:mgmt", 2),
                             ("vxkept", f"vnet:{me}:kept:lan", 3),
                             ("vxelse", "vnet:0000000000000000:gone:lan", 5),
                             ("vxother", "theirs", 4))]
    ran = []

    def fake(argv, **kw):
        ran.append(argv)
        return runner.Result(argv, 0, json.dumps(shown) if "show" in argv else "", "")
    monkeypatch.setattr(runner, "run", fake)
    monkeypatch.setattr(remotehosts.hostaccess, "runner", runner)
    assert multihost.gc_hosts(Target(uri=HERE), lambda m: None) == ["vxgone1", "vxgone2"]
    assert [a for a in ran if "del" in a] == [["ip", "link", "del", "vxgone1"],
                                             ["ip", "link", "del", "vxgone2"]]
    assert all(a[0] == "ip" and a[1] != "netns" for a in ran)       # here, not in a namespace
    ran.clear()
    assert multihost.gc_hosts(Target(uri="qemu+ssh://root@hv1.example/system"),
                              lambda m: None) == [] and ran == []   # not this machine


def test_destroy_with_hv2_silent_names_the_command_with_the_uri_quoted(tmp_path, monkeypatch):
    """hv1 (this machine) is cleaned, hv2 does not answer: the record keeps hv2 and the hint is
    a command that a shell runs as written (a socket= URI holds '?', and may hold '&')."""
    import shlex

    from provisioner.errors import HypervisorError, VnetError
    from provisioner.host import state

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    uri = "qemu:///system?socket=/run/a b&c/libvirt-sock"
    hv2 = "qemu+ssh://root@hv2.example/system"
    target = Target(uri=uri)
    record = {"lab": "two", "hosts": {"hv1": {"uri": uri, "netns": None},
                                      "hv2": {"uri": hv2, "netns": None}}}
    state.save(target, "two", record)
    cleaned = []

    class Driver:
        owner = "0123456789abcdef"

        def __init__(self, t):
            if t.uri == hv2:
                raise VnetError("hv2 does not answer")

        def destroy(self, lab, progress):
            return ["domain vnet-two-a"]
    monkeypatch.setattr(multihost, "LibvirtDriver", Driver)
    monkeypatch.setattr(remotehosts, "clean",
                        lambda t, owner, lab, legacy=False, networks=(): cleaned.append(t) or [])
    with pytest.raises(HypervisorError) as exc:
        multihost.destroy(record, target, lambda m: None)
    assert cleaned == [Target(uri=uri)]
    assert exc.value.hint.endswith(f"vnet destroy two --uri {shlex.quote(uri)}")
    assert shlex.split(exc.value.hint.split(": ", 1)[1])[-1] == uri
    assert state.read(target, "two")["hosts"].keys() == {"hv2"}


def test_gc_of_a_sandboxs_other_hosts_leaves_a_lab_whose_up_saved_its_record_meanwhile(
        tmp_path, monkeypatch):
    """gc lists the labs with records, then each host's tagged labs: an `up` that saves its
    record in between is not an orphan. Under each lab's lock gc looks again, and leaves hv2's
    domains and the VXLAN devices of such a lab alone (FAKE hosts, drivers and devices)."""
    from types import SimpleNamespace

    from provisioner.drivers.libvirt import lifecycle
    from provisioner.host import labhelpers, sandbox_hosts, state

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    target = Target(uri="qemu:///system?socket=/sb", sandbox="sbx")
    destroyed = []

    class Hv2:
        owner = "me"

        def __init__(self, target):
            pass

        def destroy(self, lab, progress):
            destroyed.append(lab)
            return [f"domain {lab}"]

    def present(sb):          # gc has listed the records: the racing `up` saves its own now
        state.save(target, "racer", {"lab": "racer"})
        return [2]
    monkeypatch.setattr(multihost, "LibvirtDriver", Hv2)
    monkeypatch.setattr(lifecycle, "tagged_labs", lambda driver, progress: {"racer": {},
                                                                          "orphan": {}})
    monkeypatch.setattr(sandbox_hosts, "present", present)
    monkeypatch.setattr(sandbox_hosts, "host_view", lambda sb, i: SimpleNamespace(
        uri=f"qemu:///hv{i}", host_netns=f"vnet-sbx-hv{i}"))
    monkeypatch.setattr(remotehosts, "gc_remote", lambda target, progress: [])
    monkeypatch.setattr(vxlan, "owner_labs", lambda where, owner: {"racer", "orphan"})
    monkeypatch.setattr(vxlan, "remove", lambda where, owner, lab: [f"vx-{lab}"])
    monkeypatch.setattr(labhelpers, "stop_all", lambda lab_dir, progress: None)
    removed = multihost.gc_hosts(target, lambda m: None)
    assert destroyed == ["orphan"] and "vx-racer" not in removed
    assert sorted(removed) == ["domain orphan", "vx-orphan", "vx-orphan"]


def test_destroy_removes_a_vxlan_device_a_crash_left_without_its_alias(monkeypatch):
    """`ip link add` and the alias are two commands: a device left between them carries no
    tag. It goes with its lab when its name and VNI are exactly the lab network's; a look-alike
    with another VNI, or another lab's name, stays (FAKE ip)."""
    import json

    from provisioner.host import runner

    mine = vxlan.device_name("two", "lan")
    shown = [{"ifname": mine, "linkinfo": {"info_data": {"id": vxlan.vni_for("two", "lan")}}},
             {"ifname": vxlan.device_name("two", "wan"), "linkinfo": {"info_data": {"id": 7}}},
             {"ifname": vxlan.device_name("one", "lan"),
              "linkinfo": {"info_data": {"id": vxlan.vni_for("one", "lan")}}}]
    ran = []

    def fake(argv, **kw):
        ran.append(argv)
        return runner.Result(argv, 0, json.dumps(shown) if "show" in argv else "", "")
    monkeypatch.setattr(runner, "run", fake)
    assert vxlan.remove("vnet-x-host", "me", "two", networks=("lan", "wan")) == [mine]
    assert vxlan.remove("vnet-x-host", "me", "two") == []        # no networks: no guessing

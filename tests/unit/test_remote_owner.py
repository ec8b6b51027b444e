"""Remote-host leftovers belong to one owner and one target (vxlan.py, remotehosts.py): the
VXLAN alias names the owner, removal and gc take only this owner's devices, a same-tag device
is this lab's only when the target has a record of it, and a lab name that another target
records on a shared remote host is refused before anything is created."""
import json

import pytest

from provisioner.drivers.libvirt import multihost, remotehosts
from provisioner.errors import Unsupported
from provisioner.host import hostaccess, runner, state, vxlan
from provisioner.host.state import Target
from provisioner.lab import loader as labfile

from .test_hostaccess import OWNER, _sandbox_lab
from .test_hosts_labfile import ISSUE_LAB

OTHER = "fedcba9876543210"
HV2 = "qemu+ssh://root@hv2.example/system"


@pytest.fixture
def host(monkeypatch):
    """A remote host whose VXLAN devices are `devices` ({name: (vni, alias)}); `ran` the
    command lines it got."""
    box = {"devices": {}, "ran": []}

    def fake_run(argv, **kw):
        line = argv[-1]
        box["ran"].append(line)
        out = json.dumps([{"ifname": n, "ifalias": a, "linkinfo": {"info_data": {"id": v}}}
                          for n, (v, a) in box["devices"].items()]) if "show" in line else ""
        return runner.Result(argv, 0, out, "")
    monkeypatch.setattr(runner, "run", fake_run)
    box["access"] = hostaccess.for_uri(HV2)
    return box


def test_the_alias_names_the_owner_and_removal_takes_only_this_owners(host):
    (seg, *_) = vxlan.segments(labfile.resolve(ISSUE_LAB), owner=OWNER)["hv2"]
    assert seg.tag == f"vnet:{OWNER}:two:{seg.network}"
    host["devices"] = {"vx000000000a": (1, f"vnet:{OWNER}:two:lan"),
                       "vx000000000b": (2, f"vnet:{OTHER}:two:lan"),      # another owner's
                       "vx000000000c": (3, f"vnet:{OWNER}:twox:lan"),     # another lab
                       "vx000000000d": (4, "vnet:two:lan"),               # an older vnet's
                       "vx000000000e": (5, "someone-else"),
                       "vx000000000f": (6, f"vnet:{OWNER}:../x:lan")}     # not a lab name
    assert vxlan.remove(host["access"], OWNER, "two") == ["vx000000000a"]
    assert vxlan.remove(host["access"], OWNER, "two", legacy=True) == ["vx000000000a",
                                                                       "vx000000000d"]
    assert not any("vx000000000b" in line for line in host["ran"])
    assert vxlan.owner_labs(host["access"], OWNER) == {"two", "twox"}
    assert vxlan.owner_labs(host["access"], OTHER) == {"two"}


def test_a_same_tag_device_is_this_labs_only_when_the_target_recorded_the_lab(host):
    segs = vxlan.segments(labfile.resolve(ISSUE_LAB), owner=OWNER)["hv2"]
    host["devices"] = {"vx000000000a": (segs[0].vni, segs[0].tag)}
    assert vxlan.vnis_in_use(host["access"], segs, recorded=True) == []
    (problem,) = vxlan.vnis_in_use(host["access"], segs, recorded=False)
    assert f"VNI {segs[0].vni}" in problem and "vx000000000a" in problem
    host["devices"] = {"vx000000000a": (segs[0].vni, f"vnet:{OTHER}:two:{segs[0].network}")}
    assert len(vxlan.vnis_in_use(host["access"], segs, recorded=True)) == 1


def _record_elsewhere(key: str, lab: str, uri: str) -> None:
    d = state.state_root() / "labs" / key / lab
    d.mkdir(parents=True)
    (d / state.RECORD).write_text(json.dumps({"lab": lab, "hosts": {
        "hv1": {"uri": "qemu:///system", "netns": "x"}, "hv2": {"uri": uri, "netns": None}}}))


def test_a_lab_name_another_target_records_on_a_shared_remote_host_is_refused(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    lab, target = _sandbox_lab(HV2)
    _record_elsewhere("sandbox-s2", lab.name, "qemu+ssh://ops@hv2.example:22/system")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(Unsupported) as exc:
        multihost.up(lab, target, print)
    assert exc.value.status == 2 and "\n" not in exc.value.message
    assert exc.value.message.startswith(f"lab name: {lab.name} is also a lab of sandbox-s2 "
                                        "on remote host hv2.example (hosts.hv2)")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    # another remote host, or the same target's own record: no conflict
    targets = multihost.host_targets(lab, target)
    remotehosts.refuse_shared_lab(Target(uri="x", sandbox="s2"), lab.name, targets)
    other, _ = _sandbox_lab("qemu+ssh://root@hv3.example/system")
    remotehosts.refuse_shared_lab(target, lab.name, multihost.host_targets(other, target))

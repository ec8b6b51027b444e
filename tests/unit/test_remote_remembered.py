"""The remote hosts a target's labs used are remembered for `gc` (remotehosts.remember) as
long as the target lives: `vnet sandbox down` (state.remove_all) drops them, so a later
`vnet gc --sandbox S` does not knock on a gone host forever."""
from provisioner.drivers.libvirt import remotehosts
from provisioner.host import state
from provisioner.host.state import Target

HV2 = "qemu+ssh://root@hv2.example/system"


def test_sandbox_down_forgets_the_remote_hosts_its_labs_used(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    gone, kept = Target(uri="qemu:///system", sandbox="rf1"), Target(uri="qemu:///system",
                                                                       sandbox="rf2")
    for target in (gone, kept):
        state.save(target, "web", {"lab": "web", "hosts": {"hv2": {"uri": HV2}}})
        remotehosts.remember(target, Target(uri=HV2))
    assert remotehosts.remembered(gone) == [HV2]
    state.remove_all(gone, print)
    assert remotehosts.remembered(gone) == []
    assert not (tmp_path / "remote-hosts" / gone.key).exists()
    assert remotehosts.remembered(kept) == [HV2]                 # another target's stay
    state.remove_all(gone, print)                                 # twice: nothing left to do

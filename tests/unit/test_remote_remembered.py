"""The remote hosts a target's labs used are remembered for `gc` (remotehosts.remember) as
long as the target lives: `vnet sandbox down` (state.remove_all) drops them, so a later
`vnet gc --sandbox S` does not knock on a gone host forever."""
import fcntl
import os

from provisioner.drivers.libvirt import remotehosts
from provisioner.host import locks, state
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


def _lock_is_held(target: Target) -> bool:
    """Whether someone holds the target's remote-hosts lock (flock: per open file, so a probe
    from this process sees this process's own holder)."""
    path = locks.lock_path("remote-hosts", target.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_remember_and_forget_work_under_the_targets_lock(tmp_path, monkeypatch):
    """A forget between a remember's mkdir and its write removed the directory; a forget that
    read the records before a concurrent up saved its own dropped the entry that up wrote.
    Both now run under one lock per target: seen held where each reads and writes."""
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    target = Target(uri="qemu:///system", sandbox="rf1")
    seen: list[tuple[str, bool]] = []
    write, labs_of = locks.write_atomic, state.labs_of

    def watched_write(path, text, mode=0o644):
        seen.append(("remember writes", _lock_is_held(target)))
        return write(path, text, mode)

    def watched_labs_of(t):
        seen.append(("forget reads the records", _lock_is_held(target)))
        return labs_of(t)
    monkeypatch.setattr(locks, "write_atomic", watched_write)
    monkeypatch.setattr(state, "labs_of", watched_labs_of)
    remotehosts.remember(target, Target(uri=HV2))
    remotehosts.forget_unused(target)
    assert seen == [("remember writes", True), ("forget reads the records", True)]
    assert remotehosts.remembered(target) == [] and not _lock_is_held(target)

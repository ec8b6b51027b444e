"""A lab file's qemu+ssh:// URI is opened by libvirt, whose ssh transport runs the URI's
`command=` as root on this machine (https://libvirt.org/uri.html#ssh-transport): vnet takes
only the parameters it reads, in the query libvirt reads (src/util/viruri.c
virURIParseParams splits on `&`, or on `;` when no `&` is left), and a command only under its
state root (hostaccess._query)."""
import pytest

from provisioner.errors import LabFileError, Unsupported
from provisioner.host import hostaccess

from .test_hostaccess import _sandbox_lab

HOST = "qemu+ssh://root@hv2.example/system"


@pytest.mark.parametrize("query, says", [
    ("socket=/x;command=/tmp/evil", "';' in the query"),       # libvirt runs /tmp/evil
    ("command=/tmp/x", "not under vnet's state root"),
    ("command={root}/../x", "not under vnet's state root"),      # `..` out of the root
    ("no_verify=1", "'no_verify' is not one vnet reads"),       # libvirt's host key check off
    ("no_verify", "'no_verify' is not one vnet reads"),
    ("keyfile=/k&known_hosts=/dev/null", "'known_hosts' is not one vnet reads"),
    ("command={root}/ssh&command=/tmp/x", "'command' is repeated"),
    ("socket=relative", "socket= must be an absolute path"),
])
def test_a_query_vnet_does_not_read_is_refused_before_anything_is_created(
        query, says, tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    uri = f"{HOST}?{query.format(root=tmp_path)}"
    with pytest.raises(Unsupported) as exc:
        hostaccess.for_uri(uri, "hosts.hv2.uri")
    assert exc.value.status == 2 and "\n" not in exc.value.message
    assert exc.value.message.startswith("hosts.hv2.uri: ")
    assert says in exc.value.message and "accepted: ?keyfile=" in exc.value.message
    with pytest.raises(LabFileError, match=f"hosts.hv2.uri: .*{says}"):
        _sandbox_lab(uri)                       # refused when the lab file loads
    assert list(tmp_path.iterdir()) == []                  # nothing created


def test_the_sandbox_form_with_a_command_under_the_state_root_is_taken(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    keys = tmp_path / "sandboxes" / "s" / "ssh"
    access = hostaccess.for_uri(f"{HOST}?keyfile={keys}/id_ed25519&command={keys}/ssh"
                                "&socket=/var/lib/vnet/run/libvirt-sock")
    assert access.ssh[0] == f"{keys}/ssh"
    assert hostaccess.for_uri(HOST).ssh[0] == "ssh"


def test_the_sandbox_hosts_own_uri_is_taken(tmp_path, monkeypatch):
    from provisioner.host import sandbox, sandbox_hosts

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    uri = sandbox_hosts.ssh_uri(sandbox.describe("s1"))
    assert hostaccess.for_uri(uri).ssh[0] == str(sandbox_hosts.ssh_dir(sandbox.describe("s1"))
                                                 / "ssh")


def test_gc_never_opens_a_remembered_uri_that_up_would_refuse_now(tmp_path, monkeypatch):
    """A URI an older vnet remembered (remotehosts.remember) reaches libvirt only if it passes
    today's check: libvirt would run its command= as root."""
    from provisioner.drivers.libvirt import remotehosts
    from provisioner.host.state import Target

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))

    def no_libvirt(*a, **kw):
        raise AssertionError("libvirt opened a refused URI")
    monkeypatch.setattr(remotehosts, "LibvirtDriver", no_libvirt)
    target, said = Target(uri="qemu:///system", sandbox="rf1"), []
    remotehosts.remember(target, Target(uri=f"{HOST}?socket=/x;command=/tmp/evil"))
    assert remotehosts.gc_remote(target, said.append) == []
    (line,) = said
    assert line.startswith("left alone: remembered remote host ") and "';'" in line

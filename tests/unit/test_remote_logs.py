"""The serial-log directory on a remote host (hostaccess.py): a record's log_dir reaches `cat`
only when it is exactly a lab's directory, and removing the last lab's directory also removes
the emptied directories above it, up to REMOTE_DIR itself (never recursively)."""
import pytest

from provisioner.errors import VnetError
from provisioner.host import hostaccess, runner

from .test_hostaccess import OWNER, _dispatcher

REMOTE = hostaccess.REMOTE_DIR


@pytest.fixture
def host(monkeypatch):
    """A remote host where the lines in `fail` fail; `ran` its command lines."""
    box = {"ran": [], "fail": set()}

    def fake_run(argv, check=True, **kw):
        box["ran"].append(argv[-1])
        status = int(argv[-1] in box["fail"])
        if status and check:
            raise AssertionError(f"fatal: {argv[-1]} failed")
        if argv[-1].startswith("test -d "):           # 1: not a directory; 255: no answer
            return runner.Result(argv, box.get("test_d", 0), "", "")
        listing = argv[-1].startswith("ls -1 -- ")
        if listing and box.get("ls_error"):          # ls: what it says when it cannot list
            return runner.Result(argv, 2, "", box["ls_error"])
        return runner.Result(argv, status, box.get("files", "") if listing else "log", "")
    monkeypatch.setattr(runner, "run", fake_run)
    box["access"] = hostaccess.for_uri("qemu+ssh://root@hv2.example/system")
    return box


@pytest.mark.parametrize("log_dir", [
    f"{REMOTE}/{OWNER}/lab/../../../../etc",          # `..` from a record: would reach `cat`
    f"{REMOTE}/{OWNER}/../{OWNER}/lab",
    f"{REMOTE}/{OWNER}/lab/sub",
    f"{REMOTE}/{OWNER}/lab/",
    f"{REMOTE}/{OWNER}",
    f"{REMOTE}//{OWNER}/lab",
    f"/elsewhere{REMOTE}/{OWNER}/lab",
])
def test_a_log_dir_that_is_not_exactly_a_labs_directory_never_reaches_cat(host, log_dir):
    with pytest.raises(ValueError):
        hostaccess.read_log(host["access"], log_dir, "b")
    assert host["ran"] == []


def test_a_labs_own_log_dir_is_read(host):
    assert hostaccess.read_log(host["access"], f"{REMOTE}/{OWNER}/lab", "b") == "log"
    assert host["ran"] == [f"cat -- {REMOTE}/{OWNER}/lab/b.serial.log"]


def test_the_last_labs_removal_also_removes_the_emptied_remote_dir(host):
    hostaccess.remove_log_dir(host["access"], OWNER, "lab")
    assert host["ran"][-1] == f"rmdir --ignore-fail-on-non-empty -- {REMOTE}"
    assert all(map(_dispatcher().permitted, host["ran"]))    # the sandbox's host allows it
    # REMOTE_DIR a mount point (a sandbox's SSH host) or not empty: its rmdir fails, fine
    host["fail"] = {host["ran"][-1]}
    assert hostaccess.remove_log_dir(host["access"], OWNER, "lab") == \
        f"log directory {REMOTE}/{OWNER}/lab"


def test_only_the_serial_logs_qemu_wrote_are_removed_never_recursively(host):
    """The lab's directory holds vm logs and a file vnet never writes: each log is removed by
    name, the directory only if that left it empty (rmdir), the stranger stays, and the answer
    says so."""
    host["files"] = "a.serial.log\nb.serial.log\nnotes.txt\n"
    said = hostaccess.remove_log_dir(host["access"], OWNER, "lab")
    lab = f"{REMOTE}/{OWNER}/lab"
    (chain,) = [line for line in host["ran"] if line.startswith("rm ")]
    assert _dispatcher().split(chain) == [
        ["rm", "-f", "--", f"{lab}/a.serial.log"], ["rm", "-f", "--", f"{lab}/b.serial.log"],
        ["rmdir", "--ignore-fail-on-non-empty", "--", lab],
        ["rmdir", "--ignore-fail-on-non-empty", "--", f"{REMOTE}/{OWNER}"]]
    assert not any("-r" in line.split() or "-rf" in line.split() for line in host["ran"])
    assert "left in place: 1 file(s) vnet did not write" in said
    assert all(map(_dispatcher().permitted, host["ran"]))


def test_a_log_directory_that_is_gone_already_is_no_failure(host):
    """An `up` that stopped before the directory was made, or a destroy repeated after the
    first removed it: nothing to remove, and a destroy must not fail on it forever."""
    # in the locale the session passed on: only the exit status of `test -d` decides
    host["ls_error"] = (f"ls: Zugriff auf '{REMOTE}/{OWNER}/lab' nicht möglich: Datei oder "
                        "Verzeichnis nicht gefunden")
    host["test_d"] = 1
    said = hostaccess.remove_log_dir(host["access"], OWNER, "lab")
    assert said.endswith("(gone already)")
    lab_dir = f"rmdir --ignore-fail-on-non-empty -- {REMOTE}/{OWNER}/lab"
    assert not any(line.startswith(("rm ", lab_dir)) for line in host["ran"])
    assert all(map(_dispatcher().permitted, host["ran"]))    # the sandbox's host allows it


def test_a_log_directory_that_cannot_be_listed_is_a_failure_that_says_why(host):
    host["ls_error"] = "ssh: connect to host hv2.example port 22: Connection refused"
    host["test_d"] = 255
    with pytest.raises(VnetError, match="cannot list .* Connection refused"):
        hostaccess.remove_log_dir(host["access"], OWNER, "lab")
    assert not any(line.startswith(("rm ", "rmdir ")) for line in host["ran"])


def test_a_log_directory_that_exists_but_cannot_be_listed_is_a_failure(host):
    host["ls_error"] = "ls: cannot open directory: Permission denied"
    with pytest.raises(VnetError, match="cannot list .* Permission denied"):
        hostaccess.remove_log_dir(host["access"], OWNER, "lab")
    assert not any(line.startswith(("rm ", "rmdir ")) for line in host["ran"])

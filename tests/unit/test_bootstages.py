"""The guest's boot timeline as read from its console (guest/bootstages.py), and the init
scripts that print it."""
from provisioner.guest import bootstages
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "provisioner" / "guest" / "files"

CONSOLE = """\
VNET-T kernel 1.52
VNET-T init 1.80
VNET-T sshd 2.01
VNET-T addr 2.40 52:54:00:00:00:02
VNET-ADDR 52:54:00:00:00:02 100.64.1.10/24 eth1
VNET-T links 2.41
VNET-T addr 3.10 52:54:00:00:00:01
VNET-ADDR 52:54:00:00:00:01 192.168.150.10/24 eth0
VNET-T ready 3.30
VNET-READY vm1
"""


def test_timeline_takes_each_stage_and_the_last_address():
    assert bootstages.timeline(CONSOLE) == {"kernel": 1.52, "init": 1.8, "sshd": 2.01,
                                           "links": 2.41, "address": 3.1, "ready": 3.3}


def test_a_reboot_starts_the_timeline_over():
    again = CONSOLE + "VNET-T kernel 1.40\nVNET-T init 1.70\n"
    assert bootstages.timeline(again) == {"kernel": 1.4, "init": 1.7}


def test_no_stamps_no_timeline():
    assert bootstages.timeline("Linux version 6.1\nVNET-READY vm1\n") == {}


def test_median_over_boots_per_stage():
    runs = [{"kernel": 1.0, "ready": 3.0}, {"kernel": 2.0, "ready": 5.0}, {"kernel": 3.0}]
    assert bootstages.median_timeline(runs) == {"kernel": 2.0, "ready": 4.0}


def test_the_init_scripts_print_every_stage_the_parser_reads():
    text = "\n".join(p.read_text() for p in (
        FILES / "initramfs-init", FILES / "rootfs/usr/lib/vnet/init",
        FILES / "rootfs/usr/lib/vnet/udhcpc"))
    for stage in ("VNET-T kernel", "stamp init", "stamp sshd", "stamp links", "stamp addr",
                  "VNET-T addr", "stamp ready"):
        assert stage in text


def test_ssh_and_echo_start_before_the_nics_are_configured():
    """Nothing that can wait (a carrier, DHCP, a route) delays the SSH server and the echo."""
    init = (FILES / "rootfs/usr/lib/vnet/init").read_text()
    assert init.index("dropbear -F") < init.index("for spec in $nics")
    assert init.index("/usr/lib/vnet/echod <") < init.index("for spec in $nics")   # nc -ll -p 7

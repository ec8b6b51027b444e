"""host/capture.py without capturing: the tcpdump argv, the checked pcap path, the filter check,
and start/stop by PID on a stand-in tcpdump (a script that says "listening on" and waits)."""
import os
import time
import stat

import pytest

from provisioner.errors import LabFileError, VnetError
from provisioner.host import capture, runner


def test_argv_runs_in_the_sandbox_host_namespace_and_keeps_root():
    point = capture.CapturePoint("a:0", "vnet3", "vnet-s-host")
    argv = capture.tcpdump_argv(point, "/x/a.pcap", "/lab/capture-1.bpf", count=5)
    assert argv[:4] == ["ip", "netns", "exec", "vnet-s-host"]
    assert argv[4:] == ["tcpdump", "-i", "vnet3", "-n", "-s", "0", "--immediate-mode", "-U",
                        "-Z", "root", "-w", "/x/a.pcap", "-F", "/lab/capture-1.bpf", "-c", "5"]
    assert capture.tcpdump_argv(capture.CapturePoint("a:0", "br0"), "-", "/f")[0] == "tcpdump"


def test_pcap_path_is_checked_under_its_parent(tmp_path):
    assert capture.pcap_path(tmp_path / "a.pcap") == (tmp_path / "a.pcap").resolve()
    (tmp_path / "link.pcap").symlink_to("/etc/passwd")
    with pytest.raises(VnetError, match="refusing state path"):
        capture.pcap_path(tmp_path / "link.pcap")
    (tmp_path / "d").mkdir()
    with pytest.raises(LabFileError, match="exists and is not a regular file"):
        capture.pcap_path(tmp_path / "d")
    with pytest.raises(LabFileError, match="is not a directory"):
        capture.pcap_path(tmp_path / "nope" / "a.pcap")


@pytest.mark.skipif(runner.which("tcpdump") is None, reason="needs tcpdump (apt-get install tcpdump)")
def test_a_bad_filter_is_bad_input_before_anything_starts():
    capture.check_filter("udp port 4789")
    with pytest.raises(LabFileError) as exc:
        capture.check_filter("udp portt 4789")
    assert exc.value.status == 2 and "is not a BPF filter tcpdump accepts: can't parse" \
        in exc.value.message


@pytest.mark.skipif(runner.which("tcpdump") is None, reason="needs tcpdump (apt-get install tcpdump)")
def test_a_filter_that_looks_like_an_option_is_a_filter_not_an_option(tmp_path):
    """Without `--`, tcpdump took "-w FILE" as its option and accepted it as a "filter"."""
    with pytest.raises(LabFileError) as exc:
        capture.check_filter(f"-w {tmp_path / 'x'}")
    assert exc.value.status == 2 and not (tmp_path / "x").exists()


@pytest.fixture
def fake_tcpdump(tmp_path, monkeypatch):
    """A tcpdump stand-in on PATH: says it listens, writes its argv, waits for SIGTERM."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "tcpdump"
    script.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/argv\"\n"
                      "echo 'tcpdump: listening on x' >&2\n"
                      "trap 'echo \"3 packets captured\" >&2; exit 0' TERM\n"
                      "while :; do sleep 0.05; done\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield bin_dir
    capture.stop_recorded(tmp_path)     # a test that failed midway leaves no stand-in running


def test_start_waits_for_listening_and_stop_ends_it_by_pid(fake_tcpdump, tmp_path):
    cap = capture.start(capture.CapturePoint("br", "br0"), tmp_path / "a.pcap", tmp_path,
                        bpf="udp")
    assert cap.running() and cap.record.exists() and cap.filter_file.read_text() == "udp\n"
    summary = cap.stop()
    assert not cap.running() and not cap.record.exists() and not cap.filter_file.exists()
    assert summary["tcpdump"] == {"captured": 3}
    assert "-F " + str(cap.filter_file) in (fake_tcpdump / "argv").read_text()


def test_a_tcpdump_that_dies_is_said_with_its_last_line(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tcpdump").write_text("#!/bin/sh\necho 'tcpdump: br9: No such device exists' >&2\n"
                                     "exit 1\n")
    (bin_dir / "tcpdump").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(VnetError, match="exited with status 1: tcpdump: br9: No such device"):
        capture.start(capture.CapturePoint("br", "br9"), tmp_path / "a.pcap", tmp_path)
    assert not list(tmp_path.glob("capture-*.pid")) and not list(tmp_path.glob("capture-*.bpf"))
    assert not (tmp_path / "a.pcap").exists()           # the pcap it made goes too


def test_tcpdump_never_opens_the_pcap_path_and_a_planted_symlink_is_refused(fake_tcpdump,
                                                                           tmp_path):
    """Root's tcpdump -w FILE would write through a symlink planted under the pcap's name
    (e.g. beside a report in a shared directory): vnet opens the file itself (no link
    followed) and tcpdump writes to it as its stdout, so the file grows under its name."""
    script = fake_tcpdump / "tcpdump"
    script.write_text(script.read_text().replace("echo 'tcpdump: listening",
                                                 "printf PCAP\necho 'tcpdump: listening"))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "a.pcap").symlink_to(victim)
    with pytest.raises(VnetError, match="a.pcap: it is a symbolic link"):
        capture.start(capture.CapturePoint("br", "br0"), tmp_path / "a.pcap", tmp_path)
    assert victim.read_text() == "precious" and not list(tmp_path.glob("capture-*"))
    (tmp_path / "a.pcap").unlink()
    cap = capture.start(capture.CapturePoint("br", "br0"), tmp_path / "a.pcap", tmp_path)
    assert " -w - " in (fake_tcpdump / "argv").read_text()
    for _ in range(200):                         # live: readable under its name meanwhile
        if (tmp_path / "a.pcap").read_text() == "PCAP":
            break
        time.sleep(0.02)
    summary = cap.stop()
    pcap = tmp_path / "a.pcap"
    assert pcap.read_text() == "PCAP" and summary["bytes"] == 4
    assert oct(pcap.stat().st_mode & 0o777) == "0o644"


def test_a_pcap_with_another_hard_link_is_refused(fake_tcpdump, tmp_path):
    (tmp_path / "other").write_text("precious")
    os.link(tmp_path / "other", tmp_path / "a.pcap")
    with pytest.raises(VnetError, match="not a plain file of its own"):
        capture.start(capture.CapturePoint("br", "br0"), tmp_path / "a.pcap", tmp_path)
    assert (tmp_path / "other").read_text() == "precious"


def test_a_pcap_directory_that_cannot_be_written_is_a_clear_error(fake_tcpdump, tmp_path):
    with pytest.raises(VnetError, match="cannot write the pcap"):
        capture.start(capture.CapturePoint("br", "br0"), tmp_path / "missing" / "a.pcap", tmp_path)
    assert not list(tmp_path.glob("capture-*"))


def test_a_capture_whose_vnet_was_killed_is_stopped_with_the_lab_and_keeps_its_pcap(
        fake_tcpdump, tmp_path):
    script = fake_tcpdump / "tcpdump"
    script.write_text(script.read_text().replace("echo 'tcpdump: listening",
                                                 "printf PCAP\necho 'tcpdump: listening"))
    out = tmp_path / "out"
    out.mkdir()
    cap = capture.start(capture.CapturePoint("br", "br0"), out / "a.pcap", tmp_path)
    # ... the vnet that started it is killed here: nothing calls Capture.stop
    capture.stop_recorded(tmp_path)
    assert not cap.running() and not list(tmp_path.glob("capture-*.pid"))
    assert (out / "a.pcap").read_text() == "PCAP" and [p.name for p in out.iterdir()] == ["a.pcap"]

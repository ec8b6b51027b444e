"""Tunnels from the lab to the guests and back (issue 17): the tunnel cells as data, the spec
each guest gets (its own direction's SPI and keys), the 0600 spec files the playbook reads, the
commands vnet_tunnel runs in the guest, the probe's binding to the tunnel device, and how a
tunnel vnet could not build shows in its cells."""
import json
import os
import socket
from pathlib import Path

import pytest
import yaml

from provisioner.host import tunnelkeys
from provisioner.lab import loader
from provisioner.lab.model import Backend
from provisioner.resources import data_dir, playbook_code
from provisioner.verify import checks, tunnelcells
from provisioner.verify.presentation import KIND_TITLES
from provisioner.verify.run import probe_module

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tunnels.yaml"
ENDS = checks.Endpoints(host_listener_port=25000, internet_ip="203.0.113.1",
                        host_uplink_ip="198.51.100.2", mgmt_host_ip="100.64.3.1")


@pytest.fixture(scope="module")
def lab():
    return loader.load(EXAMPLE)


def tunnel_module():
    return playbook_code("library", "vnet_tunnel")


def test_two_tunnel_cells_per_tunnel_bound_to_its_device_and_overlay_source(lab):
    cells = [c for c in checks.build(lab, Backend.LIBVIRT, ENDS) if c.kind == "tunnel"]
    assert len(cells) == 12 and all(c.expected == "pass" for c in cells)
    a_to_b, b_to_a = cells[:2]
    assert (a_to_b.source, a_to_b.network, a_to_b.runner, a_to_b.target) == \
        ("a", "site-a", "guest:a", "b (10.99.0.2) over l2x (vxlan)")
    assert (b_to_a.source, b_to_a.network) == ("b", "site-b")   # routed: each end's own side
    assert {k: a_to_b.probe[k] for k in ("target", "port", "expect_name", "bind_dev",
                                          "bind_ip")} == \
        {"target": "10.99.0.2", "port": 7, "expect_name": "b", "bind_dev": "l2x",
         "bind_ip": "10.99.0.1"}
    assert "bind_mac" not in a_to_b.probe          # the tunnel device, not a NIC, carries it
    timeouts = {c.probe["tunnel"]: c.probe["timeout"] for c in cells}
    assert timeouts["wg"] == 8.0 and timeouts["l2x"] == 3.0   # a handshake resend fits
    assert KIND_TITLES["tunnel"] == "tunnel"


def test_each_end_gets_its_own_direction_of_the_keys(lab, tmp_path):
    keys = tunnelkeys.ensure_secrets(tmp_path, lab.tunnels)
    specs = tunnelcells.guest_specs(lab, keys)
    assert set(specs) == {"a", "b"}                # r ends no tunnel
    a, b = ({s["name"]: s for s in specs[vm]} for vm in ("a", "b"))
    assert (a["l2x"]["local"], a["l2x"]["remote"], a["l2x"]["overlay"], a["l2x"]["id"]) == \
        ("10.71.1.10", "10.71.2.10", "10.99.0.1/24", 4242)
    assert a["nv"]["key"] == 5001 << 8 and a["gr"]["key"] == 7 and "key" not in a["l2x"]
    sec = keys["sec"]
    assert (a["sec"]["spi_out"], a["sec"]["spi_in"]) == (b["sec"]["spi_in"], b["sec"]["spi_out"])
    assert (a["sec"]["spi_out"], a["sec"]["enc_out"], a["sec"]["auth_out"]) == \
        (sec["spi"][0], sec["enc"][0], sec["auth"][0])
    assert a["wg"]["peer_public"] == keys["wg"]["public"][1]
    assert b["wg"]["private"] == keys["wg"]["private"][1] and a["wg"]["port"] == 51820


def test_spec_files_are_0600_and_the_inventory_only_names_them(lab, tmp_path, monkeypatch):
    from provisioner.host.state import Target
    from provisioner.verify import ansible as guest_ansible
    from provisioner.verify import run as verifier

    seen = {}
    monkeypatch.setattr(guest_ansible, "run_playbook",
                        lambda private, playbook, inventory, env: seen.update(inventory) or {})
    cells = checks.build(lab, Backend.LIBVIRT, ENDS)
    inv = verifier.Inventory(hosts={}, mgmt_host_ip="100.64.3.1", work_dir=tmp_path)
    guest_ansible.run_guests(lab, Target(uri="qemu:///system"), cells, inv, lambda _m: None)
    hosts = seen["all"]["hosts"]
    assert "vnet_tunnels_file" not in hosts["r"]
    path = Path(hosts["a"]["vnet_tunnels_file"])
    assert path.parent == tmp_path / "tunnels" and os.stat(path).st_mode & 0o777 == 0o600
    assert [s["name"] for s in json.loads(path.read_text())] == \
        ["l2x", "nv", "gr", "gt", "sec", "wg"]
    private = tunnelkeys.tunnel_secrets(tmp_path)["wg"]["private"][0]
    assert private in path.read_text() and private not in json.dumps(seen)
    playbook = yaml.safe_load((data_dir("playbooks") / "verify.yml").read_text())
    first = [t for t in playbook[0]["tasks"] if "vnet_probe" in t or "vnet_tunnel" in t][0]
    assert "vnet_tunnel" in first and "lookup('file', vnet.vnet_tunnels_file)" in \
        first["vnet_tunnel"]["tunnels"]


def test_vnet_tunnel_builds_each_type_with_ip_and_keeps_what_exists(lab, tmp_path,
                                                                   monkeypatch):
    module = tunnel_module()
    keys = tunnelkeys.ensure_secrets(tmp_path, lab.tunnels)
    specs = tunnelcells.guest_specs(lab, keys)["a"]
    ran = []

    class Done:
        returncode, stderr = 0, ""
        stdout = "2: eth0    inet 10.71.1.10/24 brd 10.71.1.255 scope global eth0\n"

    monkeypatch.setattr(module.subprocess, "run",
                        lambda argv, **kw: ran.append((argv, kw.get("input"))) or Done())
    monkeypatch.setattr(module.os.path, "exists", lambda p: p == "/sys/class/net/gr")
    outcome, changed = module.build_all(specs)
    assert changed and outcome == {"l2x": "built", "nv": "built", "gr": "kept", "gt": "built",
                                   "sec": "built", "wg": "built"}
    lines = [" ".join(argv) for argv, _ in ran]
    assert "ip link add l2x type vxlan id 4242 local 10.71.1.10 remote 10.71.2.10 " \
           "dstport 4789" in lines
    assert f"ip link add nv type gretap local 10.71.1.10 remote 10.71.2.10 key {5001 << 8}" \
        in lines                                   # NVGRE: gretap keyed VSID << 8
    assert not any(" gr " in f" {line} " for line in lines)      # kept: not touched
    assert "ip link add sec type xfrm dev eth0 if_id 1" in lines
    sec = keys["sec"]
    assert any(line.startswith(f"ip xfrm state add src 10.71.1.10 dst 10.71.2.10 proto esp "
                               f"spi {sec['spi'][0]} ") and f"0x{sec['enc'][0]}" in line
               for line in lines)
    assert "ip xfrm policy add src 10.99.4.0/24 dst 10.99.4.0/24 dir in if_id 1 tmpl src " \
           "10.71.2.10 dst 10.71.1.10 proto esp reqid 1 mode tunnel" in lines
    (wg, key_input), = [(argv, i) for argv, i in ran if argv[0] == "wg"]
    assert key_input.strip() == keys["wg"]["private"][0]      # by stdin, never in argv
    assert keys["wg"]["private"][0] not in " ".join(wg)
    assert "ip addr add 10.99.0.1/24 dev l2x" in lines and "ip link set wg up" in lines


def test_a_failing_ip_is_reported_per_tunnel_and_the_others_go_on(monkeypatch):
    module = tunnel_module()

    class Failed:
        returncode, stderr, stdout = 2, "Error: Unknown device type.", ""

    monkeypatch.setattr(module.subprocess, "run", lambda argv, **kw: Failed())
    monkeypatch.setattr(module.os.path, "exists", lambda p: False)
    outcome, changed = module.build_all([
        {"name": "x", "type": "vxlan", "id": 1, "local": "1.1.1.1", "remote": "2.2.2.2",
         "overlay": "10.9.0.1/24", "subnet": "10.9.0.0/24"}])
    assert not changed and outcome["x"].startswith("error: ip link add x") \
        and "Unknown device type" in outcome["x"]


def test_a_tunnel_vnet_could_not_build_makes_its_cells_error(lab):
    cells = [c for c in checks.build(lab, Backend.LIBVIRT, ENDS) if c.kind == "tunnel"]
    for c in cells:
        c.observed, c.detail = "fail", "timed out"
    tunnelcells.annotate(cells, {"a": {"tunnels": {"l2x": "built", "sec": "error: no xfrm"}},
                                 "b": {"tunnels": {"l2x": "built", "sec": "built"}}})
    by_tunnel = {(c.probe["tunnel"], c.source): c for c in cells}
    assert by_tunnel[("l2x", "a")].observed == "fail"      # built: the probe's word stands
    for source in ("a", "b"):                              # a's end is missing: both cells
        c = by_tunnel[("sec", source)]
        assert c.observed == "error" and not c.ok
        assert c.detail == "vnet could not build sec (on a: no xfrm); the probe: timed out"


def test_the_probe_binds_to_the_tunnel_device_or_says_why_not():
    probe = probe_module()
    result = probe.probe({"target": "127.0.0.1", "port": 9, "bind_dev": "vnet-none0",
                          "bind_ip": "10.99.0.1", "timeout": 0.5})
    assert result["observed"] == "error" and "cannot bind to vnet-none0" in result["detail"]
    seen = []

    class Sock:
        def __init__(self, *a):
            pass

        def setsockopt(self, level, option, value):
            seen.append(("device", value))

        def bind(self, address):
            seen.append(("bind", address))

        def settimeout(self, t):
            pass

        def connect(self, address):
            raise socket.timeout()

        def close(self):
            pass

    real = probe.Sock
    probe.Sock = Sock
    try:
        result = probe.probe({"target": "10.99.0.2", "port": 7, "bind_dev": "l2x",
                              "bind_ip": "10.99.0.1"})
    finally:
        probe.Sock = real
    assert seen == [("device", b"l2x"), ("bind", ("10.99.0.1", 0))]
    assert result["observed"] == "fail"


def test_the_playbook_hides_the_tunnel_task_and_still_says_which_tunnel_failed(tmp_path):
    """The real verify playbook, run by ansible-runner on this machine with a local connection
    (no guest): vnet_tunnel's task runs with no_log (its arguments hold the keys), and what it
    built still reaches vnet, through the real vnet_probe (no probes: it sends nothing)."""
    import shutil
    import sys

    from provisioner.verify import ansible as guest_ansible

    # a copy of the playbook: Ansible prefers the library/ beside it, where the real
    # vnet_tunnel would build tunnels on this machine
    playbook = shutil.copy(data_dir("playbooks") / "verify.yml", tmp_path / "verify.yml")
    library = tmp_path / "library"
    library.mkdir()
    shutil.copy(data_dir("playbooks") / "library" / "vnet_probe.py", library)
    shutil.copytree(data_dir("playbooks") / "action_plugins", tmp_path / "action_plugins")
    (library / "vnet_tunnel.py").write_text(     # stand-in: builds nothing, fails one tunnel
        "#!/usr/bin/python\n# WANT_JSON\nimport json, sys\n"
        "specs = json.load(open(sys.argv[1]))['tunnels']\n"
        "specs = json.loads(specs) if isinstance(specs, str) else specs\n"
        "print(json.dumps({'changed': True, 'probes': {}, 'tunnels': {s['name']: "
        "'error: ip link add gr type gre...: no such device' if s['name'] == 'gr' else 'built'"
        " for s in specs}}))\n")
    secret = "0123456789abcdef" * 4
    specs = tmp_path / "a.json"
    specs.write_text(json.dumps([{"name": "gr", "type": "gre", "key": 7},
                                 {"name": "sec", "type": "ipsec", "enc_out": secret}]))
    inventory = {"all": {"hosts": {"a": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "vnet_probes": [], "vnet_nic_macs": [], "vnet_tunnels_file": str(specs)}}}}
    (tmp_path / "ssh").mkdir()
    env = {"ANSIBLE_LIBRARY": str(library), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "ssh"),
           "ANSIBLE_GATHERING": "explicit", "ANSIBLE_NOCOLOR": "True",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_REMOTE_TMP": str(tmp_path / "tmp")}
    private = tmp_path / "private"
    results = guest_ansible.run_playbook(str(private), str(playbook), inventory, env)
    assert results["a"]["tunnels"] == {"gr": "error: ip link add gr type gre...: no such device",
                                       "sec": "built"}
    events = [json.loads(p.read_text()) for p in private.glob("artifacts/*/job_events/*.json")]
    built = [e["event_data"]["res"] for e in events if e.get("event") == "runner_on_ok"
             and e["event_data"].get("task") == "Build this guest's tunnel ends"]
    assert len(built) == 1 and "censored" in built[0] and "tunnels" not in built[0]
    assert not [p for p in private.rglob("*") if p.is_file() and secret in p.read_text()]
    # and the cells say which tunnel vnet could not build
    cell = checks.Check("tunnel", "site-a", "x", "a", "b", "pass", "guest:a",
                        {"tunnel": "gr", "expect_name": "b"})
    cell.observed, cell.detail = "fail", "timed out"
    tunnelcells.annotate([cell], results)
    assert cell.observed == "error" and "vnet could not build gr (on a: ip link add" in cell.detail

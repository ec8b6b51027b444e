"""The guests' SSH masters: opened by vnet beside ansible-playbook's start, on the socket
Ansible itself names for the same guest (so its first task connects through them), ended by
PID after the run, and their directory removed with them."""
from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import ansible_runner
import pytest

from provisioner.host import ssh
from provisioner.lab import loader as labfile
from provisioner.host.state import Target
from provisioner.verify import ansible as guest_ansible

PLAIN = {"ansible_host": "100.64.3.10", "ansible_user": "root",
         "ansible_ssh_private_key_file": "/keys/id_ed25519"}


class FakePopen:
    """FAKE ssh: records its argv; runs until terminated."""
    started: list["FakePopen"] = []

    def __init__(self, argv, **kw):
        self.argv, self.kw, self.returncode = argv, kw, None
        FakePopen.started.append(self)

    def poll(self):
        return self.returncode

    def terminate(self):
        self.returncode = -15

    def kill(self):
        self.returncode = -9

    def wait(self, timeout=None):
        return self.returncode


@pytest.fixture
def popen(monkeypatch, tmp_path):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    FakePopen.started = []
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    return FakePopen.started


def option(argv: list[str], name: str) -> str:
    return next(argv[i + 1].split("=", 1)[1] for i, a in enumerate(argv)
                if a == "-o" and argv[i + 1].startswith(name + "="))


def test_ansible_is_told_the_socket_of_the_master_vnet_opened(popen, tmp_path):
    env = guest_ansible.ansible_env(Target(uri="qemu:///system"), "lab1", 1)
    directory = Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"])
    hosts, started = ssh.open_masters({"vm1": PLAIN}, directory)
    argv = started[0].argv
    # what Ansible's ssh plugin passes as -o ControlPath: the variable, %-formatted
    told = hosts["vm1"]["ansible_control_path"] % {"directory": "/elsewhere"}
    assert option(argv, "ControlPath") == told and Path(told).parent == directory
    assert len(Path(told).name) == 10      # as short as Ansible's own names (unix socket paths)
    assert option(argv, "ControlMaster") == "yes" and "-N" in argv
    assert argv[argv.index("-i") + 1] == "/keys/id_ed25519" and argv[-1] == "root@100.64.3.10"
    assert option(argv, "BatchMode") == "yes" and option(argv, "ServerAliveInterval") == "5"
    assert {k: v for k, v in hosts["vm1"].items() if k != "ansible_control_path"} == PLAIN


def test_each_guest_gets_its_own_socket(popen, tmp_path):
    hosts, _ = ssh.open_masters({"vm1": PLAIN, "vm2": {**PLAIN, "ansible_host": "100.64.3.11"},
                                 "vm3": {**PLAIN, "ansible_port": 2222}}, tmp_path)
    paths = [h["ansible_control_path"] for h in hosts.values()]
    assert len(set(paths)) == 3


def test_a_master_that_cannot_start_stops_those_already_started(popen, tmp_path, monkeypatch):
    from provisioner.host import runner

    real = runner.start_quiet

    def second_fails(argv):
        if len(popen) == 1:
            raise OSError("too many open files")
        return real(argv)
    monkeypatch.setattr(runner, "start_quiet", second_fails)
    with pytest.raises(OSError):
        ssh.open_masters({"vm1": PLAIN, "vm2": {**PLAIN, "ansible_host": "x"}}, tmp_path)
    assert [p.returncode for p in popen] == [-15]


@pytest.mark.parametrize("shaped", [{"ansible_ssh_common_args": "-o ProxyJump=hv2"},
                                    {"ansible_connection": "local"},
                                    {"ansible_ssh_private_key_file": None}])
def test_a_guest_whose_connection_ansible_shapes_otherwise_gets_no_master(popen, tmp_path, shaped):
    hosts, _ = ssh.open_masters({"vm1": {**PLAIN, **shaped}, "vm2": PLAIN}, tmp_path)
    assert [p.argv[-1] for p in popen] == ["root@100.64.3.10"]     # vm2's only
    assert hosts["vm1"] == {**PLAIN, **shaped}                        # left as it was


def test_a_port_forwarded_guest_gets_its_port(popen, tmp_path):
    ssh.open_masters({"vm1": {**PLAIN, "ansible_host": "127.0.0.1", "ansible_port": 2222}},
                     tmp_path)
    argv = popen[0].argv
    assert argv[argv.index("-p") + 1] == "2222"


def test_after_the_run_the_masters_are_ended_and_their_directory_removed(popen, tmp_path,
                                                                        monkeypatch):
    env = guest_ansible.ansible_env(Target(uri="qemu:///system"), "lab1", 2)
    directory = Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"])
    assert directory.is_dir()
    seen = {}

    def run(**kw):                   # FAKE ansible-runner: the masters were open before it ran
        seen["masters"], seen["inventory"] = [p.poll() for p in popen], kw["inventory"]
        return SimpleNamespace(events=[])
    monkeypatch.setattr(ansible_runner, "run", run)
    inventory = guest_ansible.inventory_data({"vm1": PLAIN, "vm2": {**PLAIN, "ansible_host": "x"}})
    guest_ansible.run_playbook(str(tmp_path / "private"), "pb.yml", inventory, env)
    assert seen["masters"] == [None, None]
    told = [h["ansible_control_path"] for h in seen["inventory"]["all"]["hosts"].values()]
    assert [option(p.argv, "ControlPath") for p in popen] == told
    assert [p.returncode for p in popen] == [-15, -15]
    assert not directory.exists()


def test_a_run_started_while_the_guests_boot_opens_no_master(popen, tmp_path, monkeypatch):
    env = guest_ansible.ansible_env(Target(uri="qemu:///system"), "lab1", 1)
    monkeypatch.setattr(ansible_runner, "run", lambda **kw: SimpleNamespace(events=[]))
    guest_ansible.run_playbook(str(tmp_path / "p"), "pb.yml",
                               guest_ansible.inventory_data({"vm1": PLAIN}), env, masters=False)
    assert popen == []


def test_closing_leaves_a_directory_that_holds_something_else(tmp_path):
    (tmp_path / "cp").mkdir()
    (tmp_path / "cp" / "notes").mkdir()
    ssh.close_masters(tmp_path / "cp")
    assert (tmp_path / "cp" / "notes").is_dir()


def test_ansible_keeps_its_files_under_vnets_state_never_in_a_users_home(popen, tmp_path,
                                                                         monkeypatch):
    """Under `sudo -E` HOME is the user's: Ansible's default ~/.ansible would get root's files."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    env = guest_ansible.ansible_env(Target(uri="qemu:///system"), "lab1", 1)
    state = tmp_path / "state"
    for key in ("ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP"):
        assert Path(env[key]).is_relative_to(state), (key, env[key])


def test_tasks_no_guest_needs_are_skipped_by_their_tags(popen, tmp_path, monkeypatch):
    """A skipped task still costs the controller a round over every host: vnet names the
    tagged tasks no guest needs in --skip-tags, and verify.yml carries those tags."""
    import yaml

    from provisioner.resources import data_dir

    plain = {"vnet_probes": [], "vnet_failovers": [], "vnet_listening": {}}
    assert guest_ansible.unneeded_tasks({"a": plain, "b": plain}) == \
        "tunnels,failovers,listing"
    assert guest_ansible.unneeded_tasks({
        "a": {**plain, "vnet_tunnels_file": "/t"},
        "b": {**plain, "vnet_listening": {"after": True}}}) == "failovers"
    tags = {t for task in yaml.safe_load((data_dir("playbooks") / "verify.yml").read_text())[0][
        "tasks"] for t in task.get("tags", [])}
    assert tags == {"tunnels", "failovers", "listing"}
    seen = {}
    monkeypatch.setattr(ansible_runner, "run",
                        lambda **kw: seen.update(kw) or SimpleNamespace(events=[]))
    one = labfile.resolve({"name": "l", "networks": [{"name": "n", "mode": "hostonly"}],
                           "vms": [{"name": "vm1", "nics": [{"network": "n"}]}]})
    inventory = SimpleNamespace(hosts={"vm1": PLAIN}, work_dir=tmp_path)
    guest_ansible.run_guests(one, Target(uri="qemu:///system"), [], inventory, lambda m: None)
    assert seen["envvars"]["ANSIBLE_SKIP_TAGS"] == "tunnels,failovers,listing"


def test_each_run_has_its_own_env_never_the_labs_first(tmp_path):
    """REAL ansible-runner and ansible-playbook (a local play): ansible-runner wrote the first
    run's envvars to env/envvars and read that file on every later run, so the first run's
    ANSIBLE_SKIP_TAGS skipped a task a later run of the lab needed."""
    import json

    play = tmp_path / "play.yml"
    play.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                    "    - name: tagged\n      ansible.builtin.debug: {msg: hi}\n"
                    "      tags: [listing]\n")
    inventory = {"all": {"hosts": {"h": {"ansible_connection": "local"}}}}
    private = tmp_path / "private"
    env = {"ANSIBLE_NOCOLOR": "True", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp"),
           "ANSIBLE_HOME": str(tmp_path / "home")}

    def ran_tagged(extra):
        guest_ansible.run_playbook(str(private), str(play), inventory, {**env, **extra},
                                   masters=False)
        newest = max((private / "artifacts").iterdir(), key=lambda d: d.stat().st_mtime_ns)
        events = [json.loads(f.read_text()) for f in (newest / "job_events").glob("*.json")]
        return any(e.get("event") == "runner_on_ok" for e in events)
    assert not ran_tagged({"ANSIBLE_SKIP_TAGS": "listing"})
    assert ran_tagged({})

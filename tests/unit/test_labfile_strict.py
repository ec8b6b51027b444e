"""Every bad lab file exits 2 with one line, fast, with nothing written; validators match the
whole value; an unexpected exception exits 3 with one line (1 means a red cell)."""
import copy

import pytest
import yaml
from click.testing import CliRunner

from provisioner import labfile
from provisioner.cli import main
from provisioner.drivers.libvirt_render import mgmt_subnet_for
from provisioner.errors import LabFileError

SHA_A, SHA_B = "0" * 64, "1" * 64
# One lab that uses every validated field of the lab file (render accepts it: exit 0).
FULL = {
    "name": "full",
    "images": {"deb": {"url": "https://example.invalid/deb.qcow2", "sha256": SHA_A}},
    "networks": [
        {"name": "lan", "mode": "natnetwork", "subnet": "192.168.150.0/24", "dhcp": True,
         "port_forwards": [{"name": "web", "proto": "tcp", "host_port": 8080, "vm": "web1",
                            "guest_port": 80, "host_ip": "127.0.0.1",
                            "allow_privileged": True}]},
        {"name": "out", "mode": "bridged", "bridge": "br0"},
        {"name": "back", "mode": "internal"},
    ],
    "vms": [
        {"name": "web1", "image": "tiny", "memory": 128, "cpus": 1, "nics": [
            {"network": "lan", "model": "virtio", "mac": "52:54:00:aa:bb:01",
             "ip": "192.168.150.10"},
            {"network": "back", "model": "e1000"},
            {"network": "out", "model": "sriov", "pf": "eth0"},
            {"network": "out", "model": "sriov", "vf_address": "0000:04:10.1"},
            {"network": "out", "model": "vdpa", "device": "/dev/vhost-vdpa-0"}]},
        {"name": "web2", "image": "deb", "nics": [{"network": "lan"}]},
        {"name": "web3", "image": {"url": "file:///srv/img.qcow2", "sha256": SHA_B,
                                   "name": "own"}, "nics": [{"network": "lan"}]},
    ],
}
# (path into FULL) of every field vnet validates; the last element is the key to change.
FIELDS = [
    ("name",), ("images", "deb", "url"), ("images", "deb", "sha256"),
    ("networks", 0, "name"), ("networks", 0, "mode"), ("networks", 0, "subnet"),
    ("networks", 0, "dhcp"), ("networks", 1, "bridge"),
    ("networks", 0, "port_forwards", 0, "name"), ("networks", 0, "port_forwards", 0, "proto"),
    ("networks", 0, "port_forwards", 0, "vm"), ("networks", 0, "port_forwards", 0, "host_port"),
    ("networks", 0, "port_forwards", 0, "guest_port"),
    ("networks", 0, "port_forwards", 0, "host_ip"),
    ("networks", 0, "port_forwards", 0, "allow_privileged"),
    ("vms", 0, "name"), ("vms", 0, "image"), ("vms", 0, "memory"), ("vms", 0, "cpus"),
    ("vms", 0, "nics", 0, "network"), ("vms", 0, "nics", 0, "model"),
    ("vms", 0, "nics", 0, "mac"), ("vms", 0, "nics", 0, "ip"), ("vms", 0, "nics", 2, "pf"),
    ("vms", 0, "nics", 3, "vf_address"), ("vms", 0, "nics", 4, "device"),
    ("vms", 1, "image"), ("vms", 2, "image", "url"), ("vms", 2, "image", "sha256"),
    ("vms", 2, "image", "name"),
]


def changed(path, value):
    data = copy.deepcopy(FULL)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value(node[path[-1]])
    return data


def render(tmp_path, text):
    """`vnet render LAB --out OUT` with the state dir in tmp: (result, out dir, state dir)."""
    lab = tmp_path / "lab.yaml"
    lab.write_bytes(text if isinstance(text, bytes) else text.encode())
    out, state_dir = tmp_path / "out", tmp_path / "state"
    result = CliRunner(env={"VNET_STATE_DIR": str(state_dir)}).invoke(
        main, ["render", str(lab), "--out", str(out)])
    return result, out, state_dir


def assert_refused(result, out, state_dir, words=""):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vnet: error: "), result.output
    assert len(lines[0]) < 300, lines[0]
    assert words in lines[0]
    assert not out.exists() and not state_dir.exists()


def test_the_full_lab_is_valid(tmp_path):
    result, out, _ = render(tmp_path, yaml.safe_dump(FULL))
    assert result.exit_code == 0, result.output
    assert (out / "domains" / "vnet-full-web1.xml").exists()


@pytest.mark.parametrize("path", FIELDS, ids=[".".join(map(str, p)) for p in FIELDS])
def test_a_trailing_newline_is_refused_in_every_field(tmp_path, path):
    """`$` with re.match accepts "x\\n": every validator must match the whole value."""
    data = changed(path, lambda v: f"{v}\n")
    with pytest.raises(LabFileError):
        labfile.resolve(data)
    assert_refused(*render(tmp_path, yaml.safe_dump(data)))


def test_a_trailing_newline_in_an_image_name_key_is_refused(tmp_path):
    data = copy.deepcopy(FULL)
    data["images"] = {"deb\n": data["images"]["deb"]}
    assert_refused(*render(tmp_path, yaml.safe_dump(data)))


SCALAR_FIELDS = [("networks", 0, "mode"), ("vms", 0, "nics", 0, "network"),
                 ("vms", 0, "nics", 0, "model"), ("networks", 0, "port_forwards", 0, "vm"),
                 ("networks", 0, "port_forwards", 0, "proto"), ("networks", 0, "subnet"),
                 ("networks", 1, "bridge"), ("vms", 0, "image"), ("vms", 0, "nics", 0, "mac"),
                 ("vms", 0, "nics", 0, "ip"), ("vms", 0, "name"), ("name",),
                 ("vms", 0, "nics", 2, "pf"), ("vms", 0, "nics", 4, "device"),
                 ("images", "deb", "url"), ("images", "deb", "sha256"),
                 ("networks", 0, "port_forwards", 0, "host_ip"),
                 ("networks", 0, "port_forwards", 0, "allow_privileged")]


@pytest.mark.parametrize("shape", [lambda v: [v], lambda v: {"k": v}, lambda v: [[v], {"x": v}],
                                   lambda v: ["x" * 2000, v]],
                         ids=["list", "mapping", "nested", "long-list"])
@pytest.mark.parametrize("path", SCALAR_FIELDS, ids=[".".join(map(str, p)) for p in SCALAR_FIELDS])
def test_a_list_or_mapping_where_a_scalar_belongs(tmp_path, path, shape):
    assert_refused(*render(tmp_path, yaml.safe_dump(changed(path, shape))),
                   words=".".join(str(p) for p in path[-1:]))


def test_a_non_utf8_file(tmp_path):
    assert_refused(*render(tmp_path, b"name: caf\xe9\nnetworks: []\n"), words="not UTF-8")


@pytest.mark.parametrize("text", ["name: " + "[" * 5000 + "]" * 5000,
                                  "name:\n" + "".join(" " * i + "- \n" for i in range(0, 400, 2)),
                                  "name: " + "{a: " * 3000 + "1" + "}" * 3000])
def test_deeply_nested_yaml(tmp_path, text):
    assert_refused(*render(tmp_path, text), words="nested deeper than")


def test_a_small_alias_bomb_is_refused_by_name(tmp_path):
    """Aliases are refused outright (the old loader expanded this to 100 000 strings and then
    quoted all of them in one error line)."""
    levels = ['a0: &a0 ["xxxxxxxxxx"]'] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 6)]
    text = "\n".join(levels) + "\nname: *a5\nnetworks: []\nvms: []\n"
    assert_refused(*render(tmp_path, text), words="anchors and aliases")


def test_the_billion_laughs_finishes_at_once(tmp_path):
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{b}: &{b} [" + ",".join([f"*{a}"] * 9) + "]\n"
        for a, b in zip("abcdefgh", "bcdefghi")) + "name: *i\n"
    assert len(text) < 600
    assert_refused(*render(tmp_path, text), words="line 1: YAML anchors and aliases")


@pytest.mark.parametrize("text,words", [
    ("name: a\nname: b\nnetworks: []\nvms: []\n", "line 2: duplicate key 'name' (first at line 1)"),
    ("name: a\nnetworks: [{name: n, mode: hostonly, mode: internal}]\nvms: []\n",
     "line 2: duplicate key 'mode'"),
    ("name: a\n<<: {vms: []}\n", "merge keys"),
])
def test_duplicate_and_merge_keys_are_refused(tmp_path, text, words):
    assert_refused(*render(tmp_path, text), words=words)


def test_values_quoted_in_messages_are_cut(tmp_path):
    data = changed(("networks", 0, "mode"), lambda v: "x" * 100_000)
    result, out, state_dir = render(tmp_path, yaml.safe_dump(data))
    assert_refused(result, out, state_dir, words="unknown mode 'xxxx")
    assert "\u2026" in result.output and len(result.output) < 300


@pytest.mark.parametrize("text", ["name: " + "1" * 5000, "name: 2024-02-31", "a: !!python/name:os.system",
                                  "\x00", "name: x\n---\nname: y\n", "? [a]\n: 1\n",
                                  "name: full\nimages: {deb: {url: 'http://[', sha256: '" + SHA_A + "'}}"
                                  "\nnetworks: [{name: n, mode: hostonly}]\n"
                                  "vms: [{name: a, image: deb, nics: [{network: n}]}]\n"])
def test_values_the_yaml_library_chokes_on(tmp_path, text):
    assert_refused(*render(tmp_path, text))


def test_a_lab_subnet_on_the_management_network_is_refused_at_validation(tmp_path):
    mgmt = str(mgmt_subnet_for("full"))
    data = changed(("networks", 0, "subnet"), lambda v: mgmt)
    data["vms"][0]["nics"][0]["ip"] = str(mgmt_subnet_for("full").network_address + 10)
    assert_refused(*render(tmp_path, yaml.safe_dump(data)),
                   words=f"networks.lan.subnet: {mgmt} overlaps {mgmt}, the management network")
    wide = changed(("networks", 0, "subnet"), lambda v: "100.64.0.0/16")
    wide["vms"][0]["nics"][0]["ip"] = "100.64.250.10"
    assert_refused(*render(tmp_path, yaml.safe_dump(wide)), words="the management network")


def test_no_free_subnet_left_is_a_lab_error():
    data = {"name": "n", "networks": [{"name": "big", "mode": "hostonly", "subnet": "192.168.0.0/16"},
                                      {"name": "auto", "mode": "hostonly"}],
            "vms": [{"name": "a", "nics": [{"network": "auto"}]}]}
    with pytest.raises(LabFileError, match="no free /24"):
        labfile.resolve(data)


def test_up_with_a_bad_lab_file_writes_no_state(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: a\nname: b\n")
    result = CliRunner(env={"VNET_STATE_DIR": str(tmp_path / "state")}).invoke(
        main, ["up", str(lab)])
    assert result.exit_code == 2 and "duplicate key" in result.output
    assert not (tmp_path / "state").exists()


# --- an unexpected exception is exit 3, one line, traceback only with --debug ----------------

def boom(*args, **kwargs):
    raise RuntimeError("something\nunexpected")


def test_an_internal_error_exits_3_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(labfile, "load", boom)
    monkeypatch.delenv("VNET_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["render", str(tmp_path / "lab.yaml")])
    assert result.exit_code == 3
    assert result.output.strip().splitlines() == [
        "vnet: internal error: RuntimeError: something unexpected; rerun with --debug for the "
        "traceback"]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_prints_the_traceback(tmp_path, monkeypatch, how):
    monkeypatch.setattr(labfile, "load", boom)
    args = ["--debug"] if how == "flag" else []
    env = {"VNET_DEBUG": "1"} if how == "env" else {}
    result = CliRunner(env=env).invoke(main, [*args, "render", str(tmp_path / "lab.yaml")])
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr and "in boom" in result.stderr


def test_an_internal_error_outside_a_command_body_exits_3(monkeypatch):
    """A crash in an argument callback (outside handle_errors) is caught by the group too."""
    from provisioner import model

    monkeypatch.setattr(model, "NAME_RE", None)     # check_name now crashes with AttributeError
    result = CliRunner().invoke(main, ["destroy", "lab"])
    assert result.exit_code == 3 and "vnet: internal error: AttributeError" in result.output


def test_usage_errors_still_exit_2_from_click():
    result = CliRunner().invoke(main, ["create"])
    assert result.exit_code == 2 and "Missing option '--mode'" in result.output


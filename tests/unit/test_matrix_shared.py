"""vnet matrix's shared labs (the default): one lab per NIC model carrying every mode, its cells
split back per (mode, model). The cells of each mode must be exactly those of that mode's own
lab (same kinds, ends, addresses and expected values from the mode table, per backend), and
the split result must be shaped and judged as a lab of its own. The matrix runs here on the
FAKE driver of test_matrix; tests/integration/test_matrix_shared.py boots the real thing."""
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.host import sandbox
from provisioner.lab import loader as labfile, modes
from provisioner.lab.model import Backend
from provisioner.ops import matrix, matrixlabs
from provisioner.verify import checks

from .test_matrix import Fake

SANDBOX = "mxunit"
ENDS = checks.Endpoints(host_listener_port=20000, internet_ip="203.0.113.1",
                        host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.9.1")
MODELS = ["virtio", "e1000"]


def labs(model):
    """(the shared lab of `model`, {mode: that mode's own lab}), as the matrix builds them."""
    defaults = sandbox.lab_defaults(SANDBOX)
    combos = [(m, n) for m in modes.names() for n in MODELS]
    parts, alone = [], {}
    for i, (mode, m) in enumerate(combos):
        if m != model:
            continue
        alone[mode] = labfile.resolve(matrixlabs.combo_lab(
            combos, i, matrixlabs.lab_name(mode, model), None, defaults.bridged_subnet), defaults)
        parts.append((mode, matrixlabs.combo_lab(combos, i, "mx-shared-x", None,
                                                 defaults.bridged_subnet)))
    shared = labfile.resolve(matrixlabs.shared_lab(parts, matrixlabs.shared_name(model)), defaults)
    return shared, alone


def claims(cells, network):
    """What each cell of a network claims, without what differs between two labs by
    construction: the network's name and the generated MACs."""
    def probe(c):
        p = {k: v for k, v in c.probe.items() if k not in ("bind_mac", "mac")}
        for key, mac in (("forward", "mac"), ("arp_claim", "peer_mac")):
            if key in p:
                p[key] = {k: v for k, v in p[key].items() if k != mac}
        if "forward" in p:       # the hold's key names its network (checks.forward_of)
            p["forward"] = dict(p["forward"], name=p["forward"]["name"].split(":", 1)[1])
        return p
    return [(c.kind, c.mode, c.source, c.target.split(" ")[-1] if c.kind == "nic_model"
             else c.target, c.expected, c.runner, sorted(probe(c).items(), key=str))
            for c in cells if c.network == network]


@pytest.mark.parametrize("backend", [Backend.LIBVIRT, Backend.VIRTUALBOX])
@pytest.mark.parametrize("model", MODELS)
def test_each_mode_in_the_shared_lab_claims_what_its_own_lab_claims(model, backend):
    shared, alone = labs(model)
    together = checks.build(shared, backend, ENDS)
    assert {c.network for c in together} == set(modes.names())
    for mode, lab in alone.items():
        own = claims(checks.build(lab, backend, ENDS), "net")
        assert own and claims(together, mode) == own, mode


def test_what_libvirt_states_differently_still_shows_per_mode():
    """natnetwork host->VM is `yes` on libvirt (the host sits on the NAT network's bridge) and
    `port fwd` on VirtualBox: the shared lab's natnetwork cells say so, and nat's stay `fail`."""
    shared, _ = labs("virtio")
    for backend, natnetwork in ((Backend.LIBVIRT, "pass"), (Backend.VIRTUALBOX, "fail")):
        cells = checks.build(shared, backend, ENDS)
        expected = {(c.mode, c.expected) for c in cells if c.kind == "host_to_vm"}
        assert ("natnetwork", natnetwork) in expected and ("natnetwork", "pass" if natnetwork ==
                                                           "fail" else "fail") not in expected
        assert {e for m, e in expected if m in ("hostonly", "bridged")} == {"pass"}
        assert {e for m, e in expected if m == "internal"} == {"fail"}


def test_the_virtualbox_backend_can_make_the_shared_lab():
    """Five lab NICs and the management NIC: within VirtualBox's eight."""
    from provisioner.drivers.virtualbox.render import VBoxContext, VirtualBoxRenderer

    shared, _ = labs("e1000")
    plan = VirtualBoxRenderer(VBoxContext()).plan(shared)
    assert plan is not None and len(shared.vms[0].nics) == 5


def verified(lab, red_network=None):
    """A verify result of `lab` as the real one is shaped, every cell as expected except the
    positive cells of `red_network`."""
    from provisioner.verify import topology
    from provisioner.verify.result import build

    cells = checks.build(lab, Backend.LIBVIRT, ENDS)
    for c in cells:
        broken = c.network == red_network and c.expected == "pass" and c.kind != "nic_model"
        c.observed = "fail" if broken else c.expected
        c.detail = "timed out" if broken else "as expected"
    found = [c.as_dict() for c in cells]
    return dict(build(lab.name, Backend.LIBVIRT, checks.verdict(found) == checks.GREEN, found,
                      {"define": 1.0, "verify": 2.0}, ["a note"], inventory="vnet",
                      topology=topology.of(lab)))


def test_split_gives_each_mode_a_result_shaped_as_its_own_lab():
    shared, _ = labs("virtio")
    result = verified(shared, red_network="hostonly")
    names = modes.names()
    parts = {m: matrixlabs.split(result, m, matrixlabs.lab_name(m, "virtio"), shared.name, names)
             for m in names}
    for mode, part in parts.items():
        assert list(part) == list(result)                      # same keys, same order
        assert part["lab"] == f"mx-{mode}-virtio"
        assert part["checks"] and {c["network"] for c in part["checks"]} == {mode}
        assert part["ok"] is (mode != "hostonly")
        assert [n["name"] for n in part["topology"]["networks"]] == [mode]
        assert all(len(vm["nics"]) == 1 for vm in part["topology"]["vms"])
        assert {f["network"] for f in part["topology"]["forwards"]} <= {mode}
        assert part["timings"] == result["timings"] and "a note" in part["notes"]
        assert shared.name in part["notes"][-1] and "--one-lab-per-mode" in part["notes"][-1]
    assert sum(len(p["checks"]) for p in parts.values()) == len(result["checks"])
    assert matrix.judged(parts["hostonly"])[0] == "red"
    assert matrix.judged(parts["internal"]) == ("green", "")


class Shared(Fake):
    """The FAKE driver, with a verify that probes nothing but builds the lab's real cells: each
    as expected, except the positive cells of the networks named in `red_networks`."""

    def __init__(self, monkeypatch, red_networks=(), **kw):
        super().__init__(monkeypatch, **kw)
        self.red_networks, self.labs = red_networks, {}

    def up(self, lab, target, say):
        self.labs[lab.name] = lab
        return super().up(lab, target, say)

    def verify(self, lab, target, say, timings=None, inventory=None):
        red = next((n.name for n in lab.networks if n.name in self.red_networks), None)
        return verified(lab, red)


def test_the_default_matrix_runs_one_lab_per_model_and_reports_per_mode(monkeypatch, tmp_path):
    fake = Shared(monkeypatch, red_networks=["internal"])
    summary = matrix.run(modes.names(), MODELS, tmp_path, progress=lambda m: None, shared=True)
    ups = [c[1] for c in fake.calls if c[0] == "up"]
    assert sorted(ups) == ["mx-shared-e1000", "mx-shared-virtio"]
    assert [c[1] for c in fake.calls if c[0] == "destroy"] == ups
    assert all(len(vm.nics) == 5 for lab in fake.labs.values() for vm in lab.vms)
    rows = summary["labs"]
    assert [(r["mode"], r["nic_model"]) for r in rows] == [(m, n) for m in modes.names()
                                                           for n in MODELS]
    assert {r["lab"]: r["verdict"] for r in rows if r["verdict"] != "green"} == {
        "mx-internal-virtio": "red", "mx-internal-e1000": "red"}
    assert summary["strategy"] == "shared" and summary["exit_code"] == 1
    assert [(s["lab"], s["modes"]) for s in summary["shared_labs"]] == [
        (f"mx-shared-{n}", modes.names()) for n in MODELS]
    for row in rows:
        assert row["shared_lab"] == f"mx-shared-{row['nic_model']}"
        report = json.loads((tmp_path / f"{row['lab']}.json").read_text())
        assert report["lab"] == row["lab"] and report["matrix"]["shared_lab"] == row["shared_lab"]
        assert {c["network"] for c in report["checks"]} == {row["mode"]}
        assert {c["mode"] for c in report["checks"]} == {row["mode"]}
        assert row["cells_total"] == len(report["checks"]) > 0
        junit = ET.parse(tmp_path / f"{row['lab']}.xml").getroot()
        assert junit.get("failures") == str(row["cells_red"])
    text = matrix.summary_table(summary)
    assert "10 mode x model result(s) from 2 lab(s)" in text
    assert "mx-shared-virtio: one lab for bridged, nat, natnetwork, hostonly, internal" in text


def test_a_model_with_one_realizable_mode_keeps_its_own_lab(monkeypatch, tmp_path):
    """vdpa is bridged only: its bridged lab is made alone (and skipped: no hardware), its
    natnetwork is unsupported; virtio's two modes share one lab."""
    fake = Shared(monkeypatch, no_hardware=["mx-bridged-vdpa"])
    summary = matrix.run(["bridged", "natnetwork"], ["vdpa", "virtio"], tmp_path,
                         progress=lambda m: None, shared=True)
    assert {c[1] for c in fake.calls if c[0] == "up"} == {"mx-shared-virtio", "mx-bridged-vdpa"}
    assert [(r["lab"], r["verdict"], r["shared_lab"]) for r in summary["labs"]] == [
        ("mx-bridged-vdpa", "skipped", None), ("mx-bridged-virtio", "green", "mx-shared-virtio"),
        ("mx-natnetwork-vdpa", "unsupported", None),
        ("mx-natnetwork-virtio", "green", "mx-shared-virtio")]
    assert matrix.exit_status(summary) == 0


def test_a_shared_lab_that_fails_to_boot_is_an_error_for_each_of_its_modes(monkeypatch, tmp_path):
    fake = Shared(monkeypatch, broken=["mx-shared-virtio"])
    summary = matrix.run(["hostonly", "internal"], ["virtio"], tmp_path, progress=lambda m: None,
                         shared=True)
    assert [r["verdict"] for r in summary["labs"]] == ["error", "error"]
    assert all("stopped while booting" in r["detail"] for r in summary["labs"])
    assert ("destroy", "mx-shared-virtio") in fake.calls and matrix.exit_status(summary) == 3


def test_cli_shares_by_default_and_one_lab_per_mode_on_request(monkeypatch, tmp_path):
    fake = Shared(monkeypatch)
    args = ["matrix", "--modes", "hostonly,internal", "--nic-models", "virtio", "--report-dir"]
    result = CliRunner().invoke(main, args + [str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert [c[1] for c in fake.calls if c[0] == "up"] == ["mx-shared-virtio"]
    fake.calls.clear()
    result = CliRunner().invoke(main, args + [str(tmp_path / "b"), "--one-lab-per-mode"])
    assert result.exit_code == 0, result.output
    assert sorted(c[1] for c in fake.calls if c[0] == "up") == ["mx-hostonly-virtio",
                                                               "mx-internal-virtio"]
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["strategy"] == \
        "one lab per mode"


@pytest.mark.parametrize("shared", [False, True])
def test_labs_at_once_never_share_a_lan_address(monkeypatch, tmp_path, shared):
    """Every bridged lab sits on the sandbox's one LAN. The loader alone gives each lab's VMs
    .10 and .11 there: two labs at once answered at the same addresses as VMs of the same
    names, so one lab's probe could pass on the other lab's VM (seen with --jobs)."""
    fake = Shared(monkeypatch)
    matrix.run(["bridged", "hostonly"], MODELS, tmp_path, sandbox_name=SANDBOX,
               progress=lambda m: None, jobs=1, shared=shared)
    lan = [nic.ip.ip for lab in fake.labs.values() for vm in lab.vms for nic in vm.nics
           if lab.network(nic.network).mode == "bridged"]
    assert len(lan) == 4 and len(set(lan)) == 4, lan


def test_every_mode_and_model_is_realizable_on_virtualbox(monkeypatch, tmp_path):
    """The k-th host-only lab takes the k-th subnet VirtualBox allows: the 8th combination of
    the matrix used to get 192.168.63.0/24, VirtualBox's management network, and hostonly x
    e1000 came out "unsupported"."""
    fake = Shared(monkeypatch, backend=Backend.VIRTUALBOX)
    summary = matrix.run(modes.names(), MODELS, tmp_path, progress=lambda m: None, jobs=1,
                         backend="virtualbox")
    assert {r["lab"]: r["verdict"] for r in summary["labs"] if r["verdict"] != "green"} == {}
    assert len(fake.labs) == 10

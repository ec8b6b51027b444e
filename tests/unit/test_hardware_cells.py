"""NICs whose model needs hardware this host lacks are reported cell by cell as skipped, never
as passed; the matrix text, JSON and JUnit show them."""
from ipaddress import IPv4Address, IPv4Network

from provisioner import checks, labfile
from provisioner import verify as verifier
from provisioner.defaultlab import default_lab
from provisioner.labfile import Defaults

ENDS = checks.Endpoints(host_listener_port=0, internet_ip="203.0.113.1",
                        host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.9.1")
SANDBOX = Defaults(bridge="lan0", bridged_subnet=IPv4Network("198.51.100.0/24"),
                   bridged_host_ip=IPv4Address("198.51.100.2"),
                   bridged_router=IPv4Address("198.51.100.1"))


def lab(model, mode="bridged", **kw):
    return labfile.resolve(default_lab(mode, model, **kw), SANDBOX)


def test_every_cell_of_a_vdpa_lab_is_skipped_with_the_reason():
    the_lab = lab("vdpa")
    cells = checks.hardware_cells(the_lab, ENDS, "vDPA device /dev/vhost-vdpa-0 does not exist")
    kinds = {c.kind for c in cells}
    assert {"vm_to_host", "host_to_vm", "vm_to_vm", "vm_to_internet", "internet_to_vm",
            "nic_model"} <= kinds
    assert len(cells) == len(checks.build(the_lab, verifier.Backend.LIBVIRT, ENDS))
    assert all(c.observed == "skipped" and c.skipped and not c.ok for c in cells)
    assert all(c.detail == "skipped: no hardware (vDPA device /dev/vhost-vdpa-0 does not exist)"
               for c in cells)


def test_sriov_nics_get_a_nic_model_cell_even_without_a_guest_driver():
    cells = checks.hardware_cells(lab("sriov", pf="enp4s0f0"), ENDS)
    models = [c for c in cells if c.kind == "nic_model"]
    assert len(models) == 2 and all(c.observed == "skipped" for c in models)
    assert "SR-IOV" in models[0].detail          # the model's own need, when no reason is given


def test_emulated_nics_have_no_hardware_cells():
    assert checks.hardware_cells(lab("virtio"), ENDS) == []


def test_hardware_nics_are_probed_like_others_once_booted():
    """On a host with the hardware the lab boots; its cells are real probes, not skipped."""
    cells = checks.build(lab("vdpa"), verifier.Backend.LIBVIRT, ENDS)
    assert cells and all(c.observed == "error" for c in cells)   # not run yet
    assert {c.probe["driver"] for c in cells if c.kind == "nic_model"} == {"virtio_net"}


def test_skipped_is_not_a_failure_only_for_a_lab_never_booted():
    cells = checks.hardware_cells(lab("vdpa"), ENDS)
    assert checks.result_ok(cells, booted=False)
    assert not checks.result_ok(cells, booted=True)


def test_unbooted_result_text_json_and_junit(tmp_path):
    the_lab = lab("vdpa")
    cells = checks.hardware_cells(the_lab, ENDS, "no /dev/vhost-vdpa-0")
    result = verifier.unbooted_result(the_lab, cells, "not booted: no vDPA device")
    assert result["ok"] and result["booted"] is False
    assert {c["observed"] for c in result["checks"]} == {"skipped"}
    assert not any(c["ok"] for c in result["checks"])             # never reported as passed
    text = verifier.matrix_text(result)
    assert f"0 ok, 0 red, {len(cells)} skipped" in text
    assert "SKIPPED (not booted: no hardware)" in text
    assert verifier.exit_code(result) == 1            # nothing was verified
    assert "MISMATCH" not in text and "VERIFIED" not in text
    verifier.write_report(result, "junit", tmp_path / "r.xml")
    junit = (tmp_path / "r.xml").read_text()
    assert junit.count("<skipped message=") == len(cells)
    assert 'failures="0"' in junit and f'skipped="{len(cells)}"' in junit
    import xml.etree.ElementTree as ET
    assert ET.fromstring(junit).tag == "testsuite"


def test_error_result_junit_has_an_error_case(tmp_path):
    result = {"lab": "x", "backend": "libvirt", "ok": False, "checks": [], "timings": {},
              "error": "libvirt refused the lab: <boom> & more"}
    verifier.write_report(result, "junit", tmp_path / "e.xml")
    import xml.etree.ElementTree as ET
    suite = ET.fromstring((tmp_path / "e.xml").read_text())
    assert suite.get("errors") == "1" and suite.find("testcase/error").get("message").startswith(
        "libvirt refused")

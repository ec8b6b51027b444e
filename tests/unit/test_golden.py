"""Golden files: each tests/golden/<case>/lab.yaml renders to the checked-in documents, and every
libvirt document passes libvirt's RelaxNG schemas. Regenerate with VNET_REGEN_GOLDEN=1."""
import json
from pathlib import Path

import pytest

from provisioner.lab import loader as labfile
from provisioner.errors import Unsupported
from provisioner.lab.model import Backend
from provisioner.ops.plans import plan_for
from tests.conftest import ROOT, regen_golden

CASES = sorted(p.parent.name for p in (ROOT / "tests" / "golden").glob("*/lab.yaml"))
HARDWARE_ONLY = {"sriov", "vdpa"}     # VirtualBox has no attachment for these
LIBVIRT_ONLY = {"cloud"}              # cloud images: libvirt backend only, for now
REFUSED_ON_VBOX = {"impair-netem": r"nics\[0\]\.impair\.delay_ms: VirtualBox has no delay",
                   "openflow": r"networks\.fabric\.switch: VirtualBox has no OpenFlow switch"}


def _compare(path: Path, text: str) -> None:
    if regen_golden():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with VNET_REGEN_GOLDEN=1 and review the diff"
    assert text == path.read_text(), f"{path} differs from the rendered output"


@pytest.mark.parametrize("case", CASES)
def test_libvirt_golden_and_schema(case, relaxng):
    lab = labfile.load(ROOT / "tests" / "golden" / case / "lab.yaml")
    plan = plan_for(lab, Backend.LIBVIRT)
    expected_dir = ROOT / "tests" / "golden" / case / "libvirt"
    for doc in plan.documents:
        relaxng(doc.text)
        _compare(expected_dir / f"{doc.kind}-{doc.name}.xml", doc.text)
    names = {f"{d.kind}-{d.name}.xml" for d in plan.documents}
    assert names == {p.name for p in expected_dir.glob("*.xml")}


@pytest.mark.parametrize("case", CASES)
def test_virtualbox_golden(case):
    lab = labfile.load(ROOT / "tests" / "golden" / case / "lab.yaml")
    if case in REFUSED_ON_VBOX:
        with pytest.raises(Unsupported, match=REFUSED_ON_VBOX[case]):
            plan_for(lab, Backend.VIRTUALBOX)
        return
    if case in HARDWARE_ONLY | LIBVIRT_ONLY:
        with pytest.raises(Unsupported, match="virtio, e1000" if case in HARDWARE_ONLY
                           else "libvirt backend"):
            plan_for(lab, Backend.VIRTUALBOX)
        return
    plan = plan_for(lab, Backend.VIRTUALBOX)
    text = json.dumps([list(c) for c in plan.commands], indent=1) + "\n"
    _compare(ROOT / "tests" / "golden" / case / "virtualbox" / "vboxmanage.json", text)
    assert all(cmd[0] == "VBoxManage" for cmd in plan.commands)

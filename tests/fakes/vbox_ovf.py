"""The OVF reading of the VBoxManage stand-in's `import` (tests/fakes/vboxmanage.py). NOT
VirtualBox: it reads an OVF 1.x envelope the way VirtualBox's reader does where vnet's box
depends on it (src/VBox/Main/xml/ovfreader.cpp and ApplianceImplImport.cpp) and refuses what
VirtualBox refuses there: a document that is not an OVF envelope, a File whose href is missing
beside the OVF, a Disk whose fileRef names no File or whose format VirtualBox cannot import, a
hardware Item without InstanceID or ResourceType, a duplicate InstanceID, a Parent that is no
controller, a HostResource naming no Disk, more than one SATA controller, a network adapter on a
network the NetworkSection does not list."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
FORMATS = {  # what VirtualBox imports (ApplianceImpl.cpp's format URIs) -> its medium type
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized": "hdd",
    "http://www.vmware.com/specifications/vmdk.html#sparse": "hdd",
    "http://www.vmware.com/specifications/vmdk.html#compressed": "hdd",
    "http://www.vmware.com/interfaces/specifications/vmdk.html#compressed": "hdd",
    "http://www.ecma-international.org/publications/standards/Ecma-119.htm": "dvddrive",
}
CONTROLLERS = {"5": "ide", "6": "scsi", "20": "sata"}       # rasd:ResourceType
OS_TYPES = {"101": "Linux26_64", "100": "Linux26", "36": "Linux", "1": "Other"}


class OvfError(Exception):
    pass


def _text(item, name: str) -> str | None:
    el = item.find(RASD + name)
    return el.text.strip() if el is not None and el.text else None


def read(path: str) -> dict:
    """{name, ostype, cpus, memory, controllers, media: [...], nics: [...]} or OvfError."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise OvfError(f"Could not read OVF file '{path}' ({exc})")
    if root.tag != OVF + "Envelope":
        raise OvfError(f"Root element in OVF file must be 'Envelope', not '{root.tag}'")
    base = os.path.dirname(os.path.abspath(path))
    files = {}
    for f in root.iterfind(f"{OVF}References/{OVF}File"):
        href = f.get(OVF + "href")
        if not os.path.isfile(os.path.join(base, href or "")):
            raise OvfError(f"Cannot find the file '{href}' referenced by '{path}'")
        files[f.get(OVF + "id")] = href
    disks = {}
    for d in root.iterfind(f"{OVF}DiskSection/{OVF}Disk"):
        ref, fmt = d.get(OVF + "fileRef"), d.get(OVF + "format")
        if ref not in files:
            raise OvfError(f"Disk '{d.get(OVF + 'diskId')}' refers to file '{ref}', which is "
                           f"not in References")
        if fmt not in FORMATS:
            raise OvfError(f"Unsupported format '{fmt}' of disk '{d.get(OVF + 'diskId')}'")
        disks[d.get(OVF + "diskId")] = {"file": files[ref], "type": FORMATS[fmt]}
    networks = {n.get(OVF + "name") for n in root.iterfind(f"{OVF}NetworkSection/{OVF}Network")}
    systems = root.findall(f"{OVF}VirtualSystem")
    if len(systems) != 1:
        raise OvfError(f"(fake) expected one VirtualSystem, found {len(systems)}")
    system = systems[0]
    items = system.findall(f"{OVF}VirtualHardwareSection/{OVF}Item")
    by_id = {}
    for item in items:
        iid, kind = _text(item, "InstanceID"), _text(item, "ResourceType")
        if iid is None or kind is None:
            raise OvfError("Required element 'InstanceID' or 'ResourceType' missing in an Item")
        if iid in by_id:
            raise OvfError(f"Duplicate InstanceID {iid} in VirtualHardwareSection")
        by_id[iid] = (kind, item)
    out = {"name": system.get(OVF + "id"), "cpus": 1, "memory": 128, "controllers": {},
           "media": [], "nics": [],
           "ostype": OS_TYPES.get(system.find(f"{OVF}OperatingSystemSection").get(OVF + "id"),
                                  "Other")}
    for iid, (kind, item) in by_id.items():
        if kind == "3":
            out["cpus"] = int(_text(item, "VirtualQuantity"))
        elif kind == "4":
            out["memory"] = int(_text(item, "VirtualQuantity"))
        elif kind in CONTROLLERS:
            if CONTROLLERS[kind] == "sata" and "sata" in out["controllers"].values():
                raise OvfError("Too many SATA controllers in OVF; import facility only supports one")
            out["controllers"][iid] = CONTROLLERS[kind]
        elif kind == "10":
            network = _text(item, "Connection")
            if network not in networks:
                raise OvfError(f"Network adapter {iid} is on '{network}', which the "
                               f"NetworkSection does not list")
            out["nics"].append({"network": network, "type": _text(item, "ResourceSubType")})
    for iid, (kind, item) in by_id.items():
        if kind not in ("15", "17"):
            continue
        parent = _text(item, "Parent")
        if parent not in out["controllers"]:
            raise OvfError(f"Item {iid} has Parent {parent}, which is no storage controller")
        resource = (_text(item, "HostResource") or "").removeprefix("ovf:")
        disk = disks.get(resource.removeprefix("/disk/")) if resource.startswith("/disk/") else None
        if disk is None:
            raise OvfError(f"Item {iid}: HostResource '{resource}' names no Disk")
        expected = "dvddrive" if kind == "15" else "hdd"
        if disk["type"] != expected:
            raise OvfError(f"Item {iid}: a {expected} cannot hold '{disk['file']}'")
        out["media"].append({"controller": parent, "port": int(_text(item, "AddressOnParent") or 0),
                             "type": expected, "file": disk["file"]})
    return out

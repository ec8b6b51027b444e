from . import NicModel

MODEL = NicModel(name="sriov", summary="an SR-IOV virtual function passed through (VFIO)",
                 libvirt_interface="hostdev", libvirt_model=None,
                 virtualbox_type=None, guest_driver=None,
                 needs_hardware="an SR-IOV capable NIC with VFs configured (sriov_numvfs > 0)")

from . import NicModel

# QEMU's e1000 is the Intel 82540EM, which is VirtualBox's "PRO/1000 MT Desktop".
MODEL = NicModel(name="e1000", summary="emulated Intel 82540EM",
                 libvirt_interface="emulated", libvirt_model="e1000",
                 virtualbox_type="82540EM", guest_driver="e1000")

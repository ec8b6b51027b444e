from . import NicModel

MODEL = NicModel(name="virtio", summary="paravirtual virtio-net",
                 libvirt_interface="emulated", libvirt_model="virtio",
                 virtualbox_type="virtio", guest_driver="virtio_net")

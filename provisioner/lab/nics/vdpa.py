from . import NicModel

MODEL = NicModel(name="vdpa", summary="a vhost-vDPA device (virtio datapath in hardware)",
                 libvirt_interface="vdpa", libvirt_model=None,
                 virtualbox_type=None, guest_driver="virtio_net",
                 needs_hardware="a vDPA device (/dev/vhost-vdpa-N)")

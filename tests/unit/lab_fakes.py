"""Fakes shared by unit tests that drive the libvirt lifecycle without a libvirtd."""


class FakeDriver:
    """libvirt as far as `up` needs it: nothing exists, everything applies."""

    owner = "0123456789abcdef"
    conn = None       # reachable: `up` touches it before building anything

    def __init__(self, target):
        pass

    def labs(self):
        return {}

    def unowned(self):
        return {}

    def apply(self, plan, progress):
        return []

    def hmp(self, domain, command):
        return ""

    def destroy(self, lab, progress):
        return []

"""The libvirt backend: render (plan = libvirt XML), connection (apply through libvirt-python,
find and remove by tag), lifecycle (up, status, destroy, gc)."""

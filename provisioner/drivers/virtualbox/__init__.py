"""The VirtualBox backend: render (plan = VBoxManage argv lists), api (VBoxManage or the
vboxapi bindings), lifecycle (up, status, destroy)."""

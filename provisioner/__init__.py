"""vnet: provision libvirt and VirtualBox labs and prove, from inside the guests, what their
networks allow and forbid."""

__version__ = "0.1.0"

"""The guests: the tiny offline image (images; its init and root files in files/), pinned cloud
images and their cloud-init seed ISO, the per-VM boot ISO, the kernel command line, the Vagrant box."""

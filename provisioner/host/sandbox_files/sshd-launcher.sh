#!/bin/sh
# Start the SSH server of one vnet sandbox host. Run by provisioner/host/sandbox_hosts.py as
#   ip netns exec vnet-NAME-hvI unshare --mount --propagation private sh THIS HOST_DIR COMMAND
# In this private mount namespace only, /etc/passwd gives root the home HOST_DIR/ssh-home, so
# dropbear reads vnet's authorized_keys there and nothing is written to the machine's /root.
# Every login runs COMMAND (a forced command: ssh_forced_command.py), which joins a libvirt
# session to the host's libvirtd and runs only the host-side commands vnet sends.
# HOST_DIR/remote-root, when there, appears at /var/lib/libvirt/vnet (hostaccess.REMOTE_DIR,
# where vnet keeps serial logs on a remote host), as in this host's libvirtd
# (libvirtd-launcher.sh): both see the same files, as on a real machine.
set -eu
dir=$1
command=$2
case $dir in /*) ;; *) echo "host dir must be absolute: $dir" >&2; exit 1;; esac
sed "s#^\(root:[^:]*:0:0:[^:]*:\)[^:]*:#\1$dir/ssh-home:#" /etc/passwd > "$dir/passwd"
mount --bind "$dir/passwd" /etc/passwd
if [ -d "$dir/remote-root" ]; then
    mount -t tmpfs -o mode=0755 vnet-state /var/lib/libvirt
    mkdir /var/lib/libvirt/vnet
    mount --bind "$dir/remote-root" /var/lib/libvirt/vnet
fi
exec dropbear -F -E -s -j -k -p 22 -r "$dir/ssh_host_ed25519_key" -P "$dir/dropbear.self.pid" \
    -c "$command"

#!/bin/sh
# Start a private libvirtd for one vnet sandbox. Run by provisioner/sandbox.py as
#   ip netns exec vnet-NAME-host unshare --mount --propagation private sh THIS STATE_DIR
# so every mount below lives only in this private mount namespace and disappears with the
# last process in it (libvirtd, its dnsmasq and QEMU children). Nothing is written outside
# STATE_DIR: /run is replaced by an empty tmpfs (the machine may have no /run/libvirt, and a
# fresh /run also hides the system D-Bus, so libvirt cannot reach firewalld or machined in
# the root namespace), libvirt's state, log and cache directories get tmpfs too.
set -eu
state=$1
caps=${2:-}    # optional: a persistent QEMU capabilities cache inside vnet's state root
conf=$state/etc-libvirt/libvirtd.conf
[ -f "$conf" ] || { echo "no $conf" >&2; exit 1; }
case $state in /run/*|/var/run/*) echo "state dir must not be under /run: $state" >&2; exit 1;; esac

for d in /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
    [ -d "$d" ] || { echo "$d is missing: install libvirt-daemon-system" >&2; exit 1; }
done

# Where the machine's /etc/resolv.conf points (systemd-resolved: a file under /run).
resolv=/etc/resolv.conf
[ -L "$resolv" ] && resolv=$(readlink -m /etc/resolv.conf)

mount --bind "$state/etc-libvirt" /etc/libvirt
# The host's /run/netns holds other namespaces: drop our copy of those mounts.
umount -l /run/netns 2>/dev/null || true
mount -t tmpfs -o mode=0755 vnet-run /run
mkdir -p /run/libvirt /run/lock
for d in /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
    mount -t tmpfs -o mode=0755 vnet-state "$d"
done
# A host that plays a remote one (sandbox_hosts.py): the fixed directory of vnet's serial logs
# is this host's own, shared with its SSH server (sshd-launcher.sh).
if [ -d "$state/remote-root" ]; then
    mkdir -p /var/lib/libvirt/vnet
    mount --bind "$state/remote-root" /var/lib/libvirt/vnet
fi
if [ -n "$caps" ]; then
    mkdir -p /var/cache/libvirt/qemu
    mount --bind "$caps" /var/cache/libvirt/qemu
fi

# DNS inside the sandbox points at the lab's "Internet", never at the machine's resolver.
case $resolv in
    /run/*) mkdir -p "$(dirname "$resolv")"; cp "$state/resolv.conf" "$resolv";;
    *) if [ -e "$resolv" ]; then mount --bind "$state/resolv.conf" "$resolv"; fi;;
esac

exec libvirtd --pid-file "$state/libvirtd.pid" --config "$conf"

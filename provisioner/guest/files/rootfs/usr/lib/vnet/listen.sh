# Sourced by the init and echod: wait for a TCP port to listen, and stamp its socket:
# "VNET-LISTEN tcp/<port> <boot id> <uptime> <inode>...", the listening socket(s), and the
# boot and uptime by which they listened. vnet reads it from the console: a refusal met on the
# way to this VM's port came from the path only if such a socket still listened after it
# (provisioner/verify/refusals.py). templates/cloud-init/vnet-ready has the same functions.
# CONSOLE: where the lines go (the console; a test's file).

sockets() {  # port: the inodes of the TCP sockets listening on it
  grep -h "$(printf ':%04X ' "$1")[0-9A-F:]* 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    while read -r _ _ _ _ _ _ _ _ _ inode _; do printf '%s ' "$inode"; done
}

listening() {  # port: wait until a TCP socket listens on it
  hex=$(printf ':%04X ' "$1")
  for i in $(seq 200); do
    grep -q "$hex[0-9A-F:]* 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null && return 0
    sleep 0.05
  done
  echo "VNET-ERROR nothing listens on TCP port $1" > "${CONSOLE:-/dev/console}"
  return 1
}

stamp_listen() {  # port: once it listens, its sockets and the uptime, on the console
  listening "$1" || return 1
  read -r up _ < /proc/uptime
  read -r boot < /proc/sys/kernel/random/boot_id    # which boot: inodes repeat across boots
  echo "VNET-LISTEN tcp/$1 $boot $up $(sockets "$1")" > "${CONSOLE:-/dev/console}"
}

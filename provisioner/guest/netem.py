"""Guest-side netem: put (or remove) a netem qdisc on the egress of the guest's NIC with a MAC.

Used where the host kernel has no sch_netem (the machine vnet's CI runs on): vnet sends this
file's source to the guest over SSH and runs it with python3 (drivers/libvirt/impair.py). It
speaks rtnetlink directly, so the guest needs no `tc`: the tiny image has none. Stdlib only.

Message layout: linux/rtnetlink.h (struct tcmsg), linux/pkt_sched.h (struct tc_netem_qopt,
TCA_NETEM_LATENCY64/JITTER64), net/sched/sch_netem.c (netem_change: the options are the qopt
struct followed by nested attributes; latency in psched ticks of 64 ns)."""
import json
import os
import socket
import struct
import sys

RTM_NEWQDISC, RTM_DELQDISC, NLMSG_ERROR = 36, 37, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
TC_H_ROOT = 0xFFFFFFFF
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_NETEM_LATENCY64, TCA_NETEM_JITTER64 = 10, 11
LIMIT = 1000                 # packets netem may hold (tc's default)
PSCHED_SHIFT = 6             # a psched tick is 64 ns


def attr(kind, payload):
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def qdisc_message(kind_of_message, ifindex, netem=None, seq=1):
    """RTM_NEWQDISC (replace the root qdisc by netem) or RTM_DELQDISC (back to the default)."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    body = struct.pack("=BBHiIII", socket.AF_UNSPEC, 0, 0, ifindex, 0, TC_H_ROOT, 0)
    if kind_of_message == RTM_NEWQDISC:
        flags |= NLM_F_CREATE | NLM_F_REPLACE
        delay_ns = int(netem.get("delay_ms", 0) * 1e6)
        jitter_ns = int(netem.get("jitter_ms", 0) * 1e6)
        loss = min(0xFFFFFFFF, int(netem.get("loss_pct", 0) / 100 * 0xFFFFFFFF))
        qopt = struct.pack("=IIIIII", min(delay_ns >> PSCHED_SHIFT, 0xFFFFFFFF), LIMIT, loss,
                           0, 0, min(jitter_ns >> PSCHED_SHIFT, 0xFFFFFFFF))
        options = qopt + attr(TCA_NETEM_LATENCY64, struct.pack("=q", delay_ns)) \
            + attr(TCA_NETEM_JITTER64, struct.pack("=q", jitter_ns))
        body += attr(TCA_KIND, b"netem\0") + attr(TCA_OPTIONS, options)
    return struct.pack("=IHHII", 16 + len(body), kind_of_message, flags, seq, 0) + body


def interface_of(mac):
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/address") as f:
                if f.read().strip().lower() == mac.lower() and \
                        not os.path.exists(f"/sys/class/net/{name}/master"):
                    return name
        except OSError:
            pass
    return None


def send(message):
    """Send one request; 0 or the kernel's errno from its acknowledgement."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as sock:   # NETLINK_ROUTE
        sock.bind((0, 0))
        sock.send(message)
        reply = sock.recv(65536)
    _, kind = struct.unpack_from("=IH", reply)
    return -struct.unpack_from("=i", reply, 16)[0] if kind == NLMSG_ERROR else 0


def apply(mac, netem):
    """netem (a dict of delay_ms, jitter_ms, loss_pct) on the NIC's egress, or None: remove
    vnet's qdisc. -> what was done, as a dict for vnet."""
    name = interface_of(mac)
    if name is None:
        raise SystemExit(f"no NIC with MAC {mac}")
    index = socket.if_nametoindex(name)
    if netem:
        code = send(qdisc_message(RTM_NEWQDISC, index, netem))
        if code:
            raise SystemExit(f"netem on {name}: {os.strerror(code)}")
        return {"ifname": name, "netem": netem}
    code = send(qdisc_message(RTM_DELQDISC, index))
    # ENOENT/EINVAL: the default qdisc is there (nothing of vnet's to remove)
    if code and code not in (2, 22):
        raise SystemExit(f"removing netem from {name}: {os.strerror(code)}")
    return {"ifname": name, "netem": None}


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    print(json.dumps(apply(request["mac"], request.get("netem"))))

"""vnet's learning-switch OpenFlow controller (issue 12), on os-ken's OpenFlow 1.3 library.

Run by provisioner/host/controller.py as
    python -I learning_switch.py SOCKET EVENTS_FILE
it listens for switches on the unix socket SOCKET (in the lab's directory, mode 0600: only root,
as ovs-vswitchd, can connect; a TCP port on 127.0.0.1 could be taken or reached by any local
user). On connect it adds the table-miss flow (priority 0:
to the controller); on a packet-in it learns the source MAC's port, installs a flow to the
destination when it knows where that MAC is (priority 1, vnet's cookie, no timeout, so the
report can list it), and sends the packet on (or floods it). Every packet-in and every
installed flow is one JSON line in EVENTS_FILE, which vnet's report reads.

os-ken's messages (ofproto_v1_3_parser: parse, build and serialize every OpenFlow message) do
the protocol; the connection loop is plain threads here, not os-ken's app runtime: under
Python 3.11 with eventlet 0.41 that runtime delivered the switch-features event to no handler
and dropped every switch (seen while building this). The learning logic follows os-ken's own
example app (simple_switch_13 in the os-ken sources, Apache-2.0).
"""
import json
import os
import socket
import struct
import sys
import threading
import time

COOKIE = 0x766E6574            # "vnet": this controller's flows
HEADER = struct.Struct("!BBHI")


class Switch:
    """One switch connection, shaped as os-ken's messages expect their datapath."""

    def __init__(self, sock, events):
        from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

        self.sock, self.events = sock, events
        self.ofproto, self.ofproto_parser = ofproto_v1_3, ofproto_v1_3_parser
        self.id, self.xid, self.mac_to_port = None, 0, {}
        self.lock = threading.Lock()

    def set_xid(self, msg):
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg):
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()
        with self.lock:
            self.sock.sendall(msg.buf)

    def note(self, **event):
        with open(self.events, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **event}) + "\n")

    def serve(self):
        from os_ken.ofproto import ofproto_parser

        parser = self.ofproto_parser
        self.send_msg(parser.OFPHello(self))
        self.send_msg(parser.OFPFeaturesRequest(self))
        buf = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return
            buf += data
            while len(buf) >= HEADER.size:
                version, msg_type, length, xid = HEADER.unpack_from(buf)
                if len(buf) < length:
                    break
                raw, buf = buf[:length], buf[length:]
                if version != self.ofproto.OFP_VERSION:
                    continue        # the Hello of an older version; the bridge speaks 1.3 too
                msg = ofproto_parser.msg(self, version, msg_type, length, xid, raw)
                self.handle(msg)

    def handle(self, msg):
        parser, ofp = self.ofproto_parser, self.ofproto
        if isinstance(msg, parser.OFPEchoRequest):
            reply = parser.OFPEchoReply(self, data=msg.data)
            reply.set_xid(msg.xid)
            self.send_msg(reply)
        elif isinstance(msg, parser.OFPSwitchFeatures):
            self.id = msg.datapath_id
            actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
            self.add_flow(0, parser.OFPMatch(), actions, "table-miss")
            self.note(event="switch", dpid=f"{self.id:016x}")
        elif isinstance(msg, parser.OFPPacketIn):
            self.packet_in(msg)

    def add_flow(self, priority, match, actions, why):
        parser, ofp = self.ofproto_parser, self.ofproto
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        self.send_msg(parser.OFPFlowMod(self, priority=priority, match=match, instructions=inst,
                                        cookie=COOKIE))
        self.note(event="flow", dpid=f"{self.id:016x}", priority=priority, why=why,
                  match=dict(match.items()), output=[a.port for a in actions])

    def packet_in(self, msg):
        from os_ken.lib.packet import ethernet, packet

        parser, ofp = self.ofproto_parser, self.ofproto
        in_port = msg.match["in_port"]
        eth = packet.Packet(msg.data).get_protocols(ethernet.ethernet)[0]
        self.note(event="packet_in", dpid=f"{self.id:016x}", in_port=in_port, src=eth.src,
                  dst=eth.dst, ethertype=f"0x{eth.ethertype:04x}")
        self.mac_to_port[eth.src] = in_port
        out_port = self.mac_to_port.get(eth.dst, ofp.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofp.OFPP_FLOOD:
            self.add_flow(1, parser.OFPMatch(in_port=in_port, eth_dst=eth.dst, eth_src=eth.src),
                          actions, "learned")
        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        self.send_msg(parser.OFPPacketOut(self, buffer_id=msg.buffer_id, in_port=in_port,
                                          actions=actions, data=data))


def listen(path):
    """The controller's unix socket, made 0600 from the start (umask), a stale one replaced.
    Bound by its name inside its directory: a lab dir's full path may exceed sun_path."""
    directory, name = os.path.split(os.path.abspath(path))
    cwd, old = os.getcwd(), os.umask(0o177)
    os.chdir(directory)
    try:
        if os.path.lexists(name):
            os.unlink(name)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(name)
    finally:
        os.umask(old)
        os.chdir(cwd)
    server.listen(16)
    return server


def main():
    path, events = sys.argv[1], os.path.abspath(sys.argv[2])
    open(events, "a").close()             # the events file exists once the controller runs
    server = listen(path)
    print(f"vnet learning controller listening on unix:{path}", flush=True)

    def run(conn, peer):
        try:
            Switch(conn, events).serve()
        except Exception as exc:  # noqa: BLE001 - one switch's fault ends its connection only
            print(f"switch {peer}: {exc!r}", flush=True)
        finally:
            conn.close()
    while True:
        conn, peer = server.accept()
        threading.Thread(target=run, args=(conn, peer), daemon=True).start()


if __name__ == "__main__":
    main()

#!/usr/bin/python
# WANT_JSON
"""vnet_tunnel: build this guest's ends of the lab's tunnels (issue 17), with iproute2's `ip`
(and `wg` for WireGuard), in ONE light invocation (a WANT_JSON module, like vnet_probe).

Module args: {"tunnels": [spec, ...]} or {"tunnels_file": path}: a spec is what
provisioner/verify/tunnelcells.py guest_specs() makes for this guest: name, type, local, remote
(underlay addresses), overlay (this end's address/prefix), key (the GRE key, NVGRE's VSID << 8
included; or the VXLAN VNI as "id"), the keys of ipsec/wireguard, and "mtu" when vnet sets it
(an underlay stretched across hosts, provisioner/lab/tunnelmtu.py).

A tunnel whose device exists is kept as it is: a verify run builds what is missing and never
repairs what someone changed on purpose (a test turns a tunnel down, or changes its key).
Result: {"changed", "probes": {}, "tunnels": {name: "built" | "kept" | "error: ..."}}; the
result never holds a key. The playbook runs it with no_log (its arguments hold the keys), which
hides the result too: the probe task hands `tunnels` back to vnet (vnet_probe's tunnels_built).
"""
import json
import os
import subprocess
import sys

VXLAN_PORT = 4789
# WireGuard makes its session on the first packet; with a persistent keepalive it does so as
# the device comes up (wireguard-tools' wg(8)), so the later end's handshake is done before
# the probes start instead of inside their connect timeout. 25 s is wg(8)'s suggested value.
KEEPALIVE = 25


def ip(*args, stdin=None):
    done = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args[:4])}...: {done.stderr.strip()[:200]}")


def device_of(address):
    """The interface that holds an underlay address (an xfrm interface's lower device)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "to", f"{address}/32"],
                         capture_output=True, text=True).stdout.split()
    return out[1] if len(out) > 1 else None


def build(spec):
    name, kind = spec["name"], spec["type"]
    ends = ["local", spec["local"], "remote", spec["remote"]]
    key = ["key", str(spec["key"])] if spec.get("key") is not None else []
    if kind == "vxlan":
        ip("link", "add", name, "type", "vxlan", "id", str(spec["id"]), *ends,
           "dstport", str(VXLAN_PORT))
    elif kind in ("nvgre", "gretap"):       # NVGRE: gretap whose key is VSID << 8 | FlowID
        ip("link", "add", name, "type", "gretap", *ends, *key)
    elif kind == "gre":
        ip("link", "add", name, "type", "gre", *ends, *key)
    elif kind == "ipsec":
        ipsec(spec)
    elif kind == "wireguard":
        ip("link", "add", name, "type", "wireguard")
        done = subprocess.run(
            ["wg", "set", name, "listen-port", str(spec["port"]), "private-key", "/proc/self/fd/0",
             "peer", spec["peer_public"], "endpoint", f"{spec['remote']}:{spec['port']}",
             "allowed-ips", spec["subnet"], "persistent-keepalive", str(KEEPALIVE)],
            input=spec["private"] + "\n", capture_output=True, text=True)   # no /dev/stdin here
        if done.returncode:
            raise RuntimeError(f"wg set {name}: {done.stderr.strip()[:200]}")
    else:
        raise RuntimeError(f"unknown tunnel type {kind}")
    if spec.get("mtu"):       # the underlay is stretched across hosts: vnet states the MTU
        ip("link", "set", name, "mtu", str(spec["mtu"]))
    ip("addr", "add", spec["overlay"], "dev", name)
    ip("link", "set", name, "up")


def ipsec(spec):
    """ESP in tunnel mode between the underlay addresses, for the overlay subnet, keyed by
    hand (`ip xfrm state/policy`, ip-xfrm(8)), routed through an xfrm interface (the tunnel's
    device: the probes bind to it, and a test can turn it down) whose if_id the SAs carry."""
    name, if_id = spec["name"], str(spec["if_id"])
    lower = device_of(spec["local"])
    ip("link", "add", name, "type", "xfrm", *(["dev", lower] if lower else []), "if_id", if_id)
    for src, dst, spi, enc, auth in (
            (spec["local"], spec["remote"], spec["spi_out"], spec["enc_out"], spec["auth_out"]),
            (spec["remote"], spec["local"], spec["spi_in"], spec["enc_in"], spec["auth_in"])):
        ip("xfrm", "state", "add", "src", src, "dst", dst, "proto", "esp", "spi", str(spi),
           "reqid", if_id, "mode", "tunnel", "if_id", if_id, "enc", "cbc(aes)", "0x" + enc,
           "auth-trunc", "hmac(sha256)", "0x" + auth, "128")
    for direction, src, dst in (("out", spec["local"], spec["remote"]),
                                ("in", spec["remote"], spec["local"])):
        ip("xfrm", "policy", "add", "src", spec["subnet"], "dst", spec["subnet"],
           "dir", direction, "if_id", if_id, "tmpl", "src", src, "dst", dst, "proto", "esp",
           "reqid", if_id, "mode", "tunnel")


def build_all(specs):
    outcome, changed = {}, False
    for spec in specs:
        if os.path.exists(f"/sys/class/net/{spec['name']}"):
            outcome[spec["name"]] = "kept"
            continue
        try:
            build(spec)
            outcome[spec["name"]] = "built"
            changed = True
        except Exception as exc:      # reported in the tunnel's cells; the others go on
            outcome[spec["name"]] = f"error: {exc}"
    return outcome, changed


def main():
    with open(sys.argv[1]) as f:
        args = json.load(f)
    specs = args.get("tunnels") or []
    if isinstance(specs, str):
        specs = json.loads(specs)
    outcome, changed = build_all(specs)
    print(json.dumps({"changed": changed, "probes": {}, "tunnels": outcome}))


if __name__ == "__main__":
    main()

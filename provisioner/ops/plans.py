"""Plans for people and files: print them, write them, pick the renderer for a backend."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from ..host import locks
from ..drivers.base import Plan, renderer
from ..lab.forwardhosts import served_on
from ..lab.model import Backend, Lab
from ..lab.tunnelmtu import tunnel_mtu


def plan_for(lab: Lab, backend: Backend, context=None) -> Plan:
    cls = renderer(backend)
    if context is None and backend is Backend.VIRTUALBOX:
        context = virtualbox_here()
    return (cls(context) if context is not None else cls()).plan(lab)


def virtualbox_here():
    """The rules `up` would apply on this machine: its VirtualBox's version and the host-only
    ranges its networks.conf allows. None (the built-in rules of VirtualBox 7.0 with the default
    ranges) where VirtualBox is not installed or does not answer."""
    from ..drivers.virtualbox import api
    from ..drivers.virtualbox.context import VBoxContext, detect_context
    from ..drivers.virtualbox.driver import VirtualBox
    from ..errors import VnetError

    if not VirtualBox.available():
        return None
    try:
        version = api.backend().version()
    except (VnetError, OSError):
        return None
    placeholders = VBoxContext()            # a plan's own disk and serial paths, as before
    return detect_context(version, placeholders.disk, placeholders.serial_dir)


def show_plan(plan: Plan, fmt: str = "table") -> None:
    """The plan as people read it (print_plan), or with --format json as one JSON document."""
    if fmt == "json":
        click.echo(json.dumps(plan_json(plan), indent=2))
    else:
        print_plan(plan)


def plan_json(plan: Plan) -> dict:
    """What a dry run would do: libvirt's XML documents, or VirtualBox's VBoxManage argv, with
    the forwards, tunnels and VXLAN devices print_plan shows as comments."""
    out: dict = {"lab": plan.lab.name, "backend": plan.backend.value}
    if plan.backend is Backend.VIRTUALBOX:
        out["commands"] = [list(c) for c in plan.commands]
    else:
        out["documents"] = [{"kind": d.kind, "name": d.name, "xml": d.text}
                            for d in plan.documents]
        out["forwards"] = forward_lines(plan)
        out["vxlan"] = list(plan.extra.get("vxlan", []))
    out["tunnels"] = tunnel_lines(plan.lab)
    return out


def print_plan(plan: Plan) -> None:
    if plan.backend is Backend.VIRTUALBOX:
        click.echo(_vbox_script(plan), nl=False)
        return
    for doc in plan.documents:
        click.echo(f"<!-- {doc.kind}: {doc.name} -->")
        click.echo(doc.text.rstrip("\n"))
    for line in forward_lines(plan) + tunnel_lines(plan.lab) + plan.extra.get("vxlan", []):
        click.echo(f"<!-- {line} -->")


def forward_lines(plan: Plan) -> list[str]:
    """One line per port forward of a libvirt plan: where it listens and how it is done."""
    how = {"hostfwd": "QEMU hostfwd", "proxies": "vnet port proxy"}
    # several hosts: the one that serves each forward (lab/forwardhosts.py)
    on = {(pf.proto, pf.host_port): f" on {served_on(plan.lab, pf)}"
          for net in plan.lab.networks for pf in net.port_forwards if plan.lab.hosts}
    return [f"port forward {r['name']}: {r['proto']} {r['host_ip']}:{r['host_port']} -> "
            f"{r['vm']}:{r['guest_port']} ({how[kind]}"
            f"{on.get((r['proto'], r['host_port']), '')})"
            for kind in how for r in plan.extra.get(kind, [])]


def tunnel_lines(lab: Lab) -> list[str]:
    """One line per tunnel: the drivers render nothing for tunnels (the guests build them in
    verify's first task, the same on every backend), so the plan says what will be built."""
    lines = []
    for t in lab.tunnels:
        ident = {"vxlan": f" VNI {t.id}", "nvgre": f" VSID {t.id}"}.get(
            t.type, f" key {t.id}" if t.id is not None else "")
        a, b = t.endpoints
        mtu = tunnel_mtu(lab, t)
        lines.append(f"tunnel {t.name}: {t.type}{ident}, {a.vm} {a.underlay_ip} ({a.network}) "
                     f"<-> {b.vm} {b.underlay_ip} ({b.network}), overlay {t.subnet}"
                     + (f", MTU {mtu} (its underlay is stretched across hosts)" if mtu else "")
                     + " (built in the guests)")
    return lines


def write_plan(plan: Plan, out: Path) -> list[Path]:
    """Write every file to a temporary sibling first, so a failure leaves no half-written tree."""
    files: dict[Path, str] = {}
    if plan.backend is Backend.VIRTUALBOX:
        files[out / "vboxmanage.json"] = json.dumps([list(c) for c in plan.commands], indent=2) + "\n"
        files[out / "vboxmanage.sh"] = _vbox_script(plan)
    else:
        for doc in plan.documents:
            files[out / f"{doc.kind}s" / f"{doc.name}.xml"] = doc.text
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        # the mode comes with the file: a chmod by name after the rename would follow a
        # symlink someone put there meanwhile
        locks.write_atomic(path, text, mode=0o755 if path.suffix == ".sh" else 0o644)
    return sorted(files)


def _vbox_script(plan: Plan) -> str:
    lines = ["#!/bin/sh", f"# vnet plan for lab {plan.lab.name} (VirtualBox)", "set -e"]
    lines += [f"# {line}" for line in tunnel_lines(plan.lab)]
    lines += [shlex.join(cmd) for cmd in plan.commands]
    return "\n".join(lines) + "\n"

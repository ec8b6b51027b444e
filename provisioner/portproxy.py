"""vnet's port proxy for natnetwork port forwards on libvirt: listens on the host and relays
TCP to a guest, as VirtualBox's NAT service does. Run by vnet, one process per lab, inside the
host's network namespace; ended by PID on `vnet destroy`.

    python -m provisioner.portproxy 7001=192.168.150.10:7 7002=192.168.150.11:7
"""
from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def _handler(guest: str, port: int):
    async def handle(reader, writer):
        try:
            g_reader, g_writer = await asyncio.wait_for(asyncio.open_connection(guest, port), 5)
        except (OSError, asyncio.TimeoutError):
            writer.close()
            return
        await asyncio.gather(_pipe(reader, g_writer), _pipe(g_reader, writer))
    return handle


def parse(specs: list[str]) -> list[tuple[int, str, int]]:
    rules = []
    for spec in specs:
        host_port, _, target = spec.partition("=")
        guest, _, guest_port = target.rpartition(":")
        rules.append((int(host_port), guest, int(guest_port)))
    return rules


async def serve(rules: list[tuple[int, str, int]]) -> None:
    servers = [await asyncio.start_server(_handler(guest, gport), "0.0.0.0", hport,
                                          reuse_address=True)
               for hport, guest, gport in rules]
    print("vnet-portproxy ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(serve(parse(sys.argv[1:])))

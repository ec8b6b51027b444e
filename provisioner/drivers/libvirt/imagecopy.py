"""The tiny image on a remote host, through libvirt's storage API (not scp): a directory pool
`vnet-images` on that host, one raw volume per file named after the image's digest, filled
with virStorageVolUpload over a virStream (https://libvirt.org/html/libvirt-libvirt-storage.html
#virStorageVolUpload). A volume that is already there, complete (its marker volume says so),
is kept, so the copy happens once per image and host; a failed upload deletes its volume."""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import HypervisorError
from ...progress import Progress
from .render import ImageFiles

POOL = "vnet-images"
POOL_DIR = "/var/lib/libvirt/images/vnet"     # on the remote host
CHUNK = 1 << 20
COMPLETE = ".complete"      # a volume's marker: its upload finished (_upload)


def is_remote(uri: str) -> bool:
    """A URI whose host is reached over a network transport (qemu+ssh://HOST/...)."""
    scheme, _, rest = uri.partition("://")
    return "+" in scheme and not scheme.endswith("+unix") and not rest.startswith("/")


def _pool(conn):
    import libvirt

    try:
        pool = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        pool = conn.storagePoolDefineXML(f"<pool type='dir'><name>{POOL}</name>"
                                         f"<target><path>{POOL_DIR}</path></target></pool>")
        pool.build(0)
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)
    return pool


def _lookup(pool, name: str):
    import libvirt

    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def _upload(conn, pool, name: str, path: Path, progress: Progress) -> str:
    """The volume `name` holding `path`, uploaded unless a complete copy is there: one whose
    marker volume (name + COMPLETE) was made after its stream finished. The size alone proves
    nothing: createXML gives the volume its full capacity before the first byte arrives."""
    import libvirt

    size = os.path.getsize(path)
    vol, mark = _lookup(pool, name), _lookup(pool, name + COMPLETE)
    if vol is not None and mark is not None and vol.info()[1] == size:
        return vol.path()
    for old in (mark, vol):            # a partial copy (an upload killed half way), or stale
        if old is not None:
            old.delete(0)
    vol = pool.createXML(f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
                         "<target><format type='raw'/></target></volume>", 0)
    stream = conn.newStream(0)
    try:
        vol.upload(stream, 0, size, 0)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                sent = 0
                while sent < len(chunk):
                    sent += stream.send(chunk[sent:])
        stream.finish()
    except BaseException:
        for undo in (stream.abort, lambda: vol.delete(0)):     # no half copy stays behind
            try:
                undo()
            except libvirt.libvirtError:
                pass
        raise
    pool.createXML(f"<volume><name>{name}{COMPLETE}</name><capacity unit='bytes'>1</capacity>"
                   "<target><format type='raw'/></target></volume>", 0)
    progress(f"copied {path.name} ({size // (1 << 20)} MiB) into pool {POOL}")
    return vol.path()


def ensure(conn, image, progress: Progress) -> ImageFiles:
    """ImageFiles with the remote host's paths of `image` (guest.images.Image)."""
    import libvirt

    try:
        pool = _pool(conn)
        paths = {part: _upload(conn, pool, f"tiny-{image.digest}-{Path(getattr(image, part)).name}",
                               Path(getattr(image, part)), progress)
                 for part in ("kernel", "initrd", "rootdisk")}
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"copying the tiny image to {conn.getURI()} failed: "
                              f"{exc.get_error_message()}") from exc
    return ImageFiles(paths["kernel"], paths["initrd"], paths["rootdisk"], image.cmdline_base)

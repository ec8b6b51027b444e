"""The tiny image on a remote host, through libvirt's storage API (not scp): a directory pool
`vnet-images` on that host, one raw volume per file named after the image's digest, filled
with virStorageVolUpload over a virStream (https://libvirt.org/html/libvirt-libvirt-storage.html
#virStorageVolUpload). A volume that is already there with the right size is kept, so the
copy happens once per image and host."""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import HypervisorError
from ...progress import Progress
from .render import ImageFiles

POOL = "vnet-images"
POOL_DIR = "/var/lib/libvirt/images/vnet"     # on the remote host
CHUNK = 1 << 20


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


def _upload(conn, pool, name: str, path: Path, progress: Progress) -> str:
    import libvirt

    size = os.path.getsize(path)
    try:
        vol = pool.storageVolLookupByName(name)
        if vol.info()[1] == size:
            return vol.path()
        vol.delete(0)                   # a partial copy from an interrupted upload
    except libvirt.libvirtError:
        pass
    vol = pool.createXML(f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
                         "<target><format type='raw'/></target></volume>", 0)
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, 0)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                sent = 0
                while sent < len(chunk):
                    sent += stream.send(chunk[sent:])
        stream.finish()
    except BaseException:
        stream.abort()
        raise
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

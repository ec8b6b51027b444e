"""The tiny image copied to a remote host through libvirt's storage API (imagecopy.py), against
a stand-in for libvirt's pool, volume and stream objects: every byte goes through the stream,
a volume already there and marked complete is kept, a partial one is replaced, a failed
upload deletes its volume."""
import pytest

pytest.importorskip("libvirt", reason="libvirt-python is missing: pip install .")
import libvirt  # noqa: E402

from provisioner.drivers.libvirt import imagecopy  # noqa: E402


class Stream:
    def __init__(self):
        self.data, self.finished = b"", False

    def send(self, chunk):
        part = chunk[:300_000]          # a short write: the loop must send the rest
        self.data += part
        return len(part)

    def finish(self):
        self.finished = True

    def abort(self):
        pass


class Vol:
    def __init__(self, name, size):
        self.name, self.size, self.uploaded, self.deleted = name, size, None, False

    def info(self):
        return [0, self.size, self.size]

    def path(self):
        return f"{imagecopy.POOL_DIR}/{self.name}"

    def delete(self, flags):
        self.deleted = True

    def upload(self, stream, offset, length, flags):
        self.uploaded = (stream, offset, length)


class Pool:
    def __init__(self, vols):
        self.vols = vols

    def storageVolLookupByName(self, name):
        if name not in self.vols:
            raise libvirt.libvirtError("no volume")
        return self.vols[name]

    def createXML(self, xml, flags):
        name = xml.split("<name>")[1].split("</name>")[0]
        size = int(xml.split("'bytes'>")[1].split("<")[0])
        self.vols[name] = Vol(name, size)
        return self.vols[name]


class Conn:
    def __init__(self):
        self.stream = Stream()

    def newStream(self, flags):
        return self.stream


def test_a_file_goes_through_the_stream_whole(tmp_path):
    blob = tmp_path / "vmlinux"
    blob.write_bytes(bytes(range(256)) * 5000)        # 1.28 MB: several chunks, short writes
    conn, pool = Conn(), Pool({})
    path = imagecopy._upload(conn, pool, "tiny-x-vmlinux", blob, lambda m: None)
    assert path == f"{imagecopy.POOL_DIR}/tiny-x-vmlinux"
    assert conn.stream.data == blob.read_bytes() and conn.stream.finished
    assert pool.vols["tiny-x-vmlinux"].uploaded[1:] == (0, blob.stat().st_size)


def test_a_complete_volume_is_kept_and_a_partial_one_replaced(tmp_path):
    blob = tmp_path / "initrd.gz"
    blob.write_bytes(b"x" * 1000)
    kept, mark = Vol("tiny-x-initrd.gz", 1000), Vol("tiny-x-initrd.gz.complete", 1)
    conn = Conn()
    imagecopy._upload(conn, Pool({kept.name: kept, mark.name: mark}), kept.name, blob,
                      lambda m: None)
    assert conn.stream.data == b"" and kept.uploaded is None
    # the full size but no marker: createXML gives a volume its capacity before any byte
    # arrives, so this is an upload that was killed half way
    partial = Vol("tiny-x-initrd.gz", 1000)
    pool = Pool({partial.name: partial})
    imagecopy._upload(conn, pool, partial.name, blob, lambda m: None)
    assert partial.deleted and conn.stream.data == b"x" * 1000
    assert "tiny-x-initrd.gz.complete" in pool.vols      # the new copy is marked complete


def test_a_failed_upload_leaves_no_volume(tmp_path):
    blob = tmp_path / "root.ext4"
    blob.write_bytes(b"x" * 1000)
    conn, pool = Conn(), Pool({})

    def broken(chunk):
        raise KeyboardInterrupt
    conn.stream.send = broken
    with pytest.raises(KeyboardInterrupt):
        imagecopy._upload(conn, pool, "tiny-x-root.ext4", blob, lambda m: None)
    assert pool.vols["tiny-x-root.ext4"].deleted and "tiny-x-root.ext4.complete" not in pool.vols


@pytest.mark.parametrize("uri, remote", [
    ("qemu+ssh://root@hv2.example/system", True),
    ("qemu+tls://hv2.example/system", True),
    ("qemu:///system", False),
    ("qemu:///system?socket=/var/lib/vnet/run/libvirt-sock", False),
    ("qemu+unix:///system", False),
])
def test_which_hosts_need_the_copy(uri, remote):
    assert imagecopy.is_remote(uri) is remote

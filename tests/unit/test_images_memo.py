"""The tiny image's resolved-package memo (resolved.json) is written atomically and a torn or
foreign one is a cache miss: the next build resolves again instead of crashing (issue 10,
point 7). apt is replaced by a recorder at vnet's one subprocess site (host/runner.py); the
memo's stamp is computed from this host's lists."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from provisioner.guest import debs as guestdebs
from provisioner.host import runner

NAMES = ["linux-image-6.1.0-9-amd64", *guestdebs.PACKAGES]
DEBS = [{"name": n, "file": f"{n}_1_amd64.deb", "sha256": "0" * 64} for n in NAMES]


@pytest.fixture
def apt(monkeypatch):
    """FAKE apt: `apt-cache depends` names the kernel, `apt-get download --print-uris` prints
    one line per package; every --print-uris run is recorded."""
    calls = []

    def run(argv, **kw):
        if argv[:2] == ["apt-cache", "depends"]:
            return SimpleNamespace(stdout="linux-image-amd64\n  Depends: linux-image-6.1.0-9-amd64\n")
        assert argv[:3] == ["apt-get", "download", "--print-uris"], argv
        calls.append("print-uris")
        return SimpleNamespace(stdout="".join(
            f"'http://deb.example/{d['file']}' {d['file']} 100 SHA256:{d['sha256']}\n"
            for d in DEBS))
    monkeypatch.setattr(runner, "run", run)
    monkeypatch.setattr(guestdebs.shutil, "which", lambda name: f"/usr/bin/{name}")
    return calls


@pytest.mark.parametrize("torn", [b'{"stamp": "ab', b"", b"\xff\xfe", b"[1, 2]",
                                  b'{"stamp": null}'], ids=["cut", "empty", "not-utf8",
                                                             "list", "no-debs"])
def test_a_torn_memo_is_a_miss_and_is_rewritten(tmp_path, apt, torn):
    memo = tmp_path / "resolved.json"
    memo.write_bytes(torn)
    assert guestdebs.resolve(tmp_path, update=False) == DEBS
    assert apt == ["print-uris"]
    assert json.loads(memo.read_text())["debs"] == DEBS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resolved.json"]   # no temporary left


def test_a_good_memo_is_used_without_asking_apt(tmp_path, apt):
    assert guestdebs.resolve(tmp_path, update=False) == DEBS
    assert guestdebs.resolve(tmp_path, update=False) == DEBS
    assert apt == ["print-uris"]

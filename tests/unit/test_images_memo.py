"""The tiny image's resolved-package memo (resolved.json) is written atomically and a torn or
foreign one is a cache miss: the next build resolves again instead of crashing (issue 10,
point 7). apt is replaced by a recorder; the memo's stamp is computed from this host's lists."""
from __future__ import annotations

import json

import pytest

from provisioner.guest import debs as guestdebs

DEBS = [{"name": "linux-image-x", "file": "linux-image-x_1_amd64.deb", "sha256": "0" * 64}]


@pytest.fixture
def apt(monkeypatch):
    calls = []

    def print_uris():
        calls.append("print-uris")
        return DEBS
    monkeypatch.setattr(guestdebs, "_print_uris", print_uris)
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

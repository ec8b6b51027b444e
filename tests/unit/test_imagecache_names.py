"""The cache's file-name rule matches the whole name (issue 10, point 2): a file named
"<sha256>.qcow2\\n" is not a download of vnet's, so prune neither lists nor removes it."""
from __future__ import annotations

import pytest

from provisioner import imagecache
from provisioner.errors import VnetError
from tests.unit.test_imagecache import SHA_A, qcow2, roots  # noqa: F401 - fixture


def test_a_cloud_file_name_with_a_trailing_newline_is_not_pruned(roots):  # noqa: F811
    cache, _ = roots
    odd = qcow2(cache / "cloud" / f"{SHA_A}.qcow2\n")
    assert imagecache.prune(keep=0, progress=lambda m: None) == []
    assert odd.is_file()


def test_removal_refuses_a_cloud_file_name_with_a_trailing_newline(roots):  # noqa: F811
    cache, _ = roots
    odd = qcow2(cache / "cloud" / f"{SHA_A}.qcow2\n")
    entry = imagecache.Entry("download", "cloud", SHA_A[:16], odd, 0, "", SHA_A)
    with pytest.raises(VnetError, match="not a cloud image vnet downloaded"):
        imagecache._remove(entry)
    assert odd.is_file()

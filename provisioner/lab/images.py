"""The images a lab file may name: the built-in tiny image, or cloud images pinned by URL and
SHA-256 (top-level `images:` and a VM's `image:`)."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from ..errors import LabFileError, quote
from .fields import _cut, _mapping, _name
from .model import CloudImage

IMAGES = ("tiny",)                   # built in; cloud images come as {url, sha256}
SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
URL_SCHEMES = ("https", "http", "file")
IMAGE_KEYS = {"url", "sha256", "name"}


def _images(raw: Any) -> dict[str, CloudImage]:
    """The top-level `images:` mapping: name -> {url, sha256}, referenced by VMs by name."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise LabFileError("images", "must be a mapping of image names to {url, sha256}")
    result = {}
    for key, value in raw.items():
        name = _name(key, f"images.{_cut(key)}")
        if name in IMAGES:
            raise LabFileError(f"images.{name}",
                               f"{quote(name)} is a built-in image; pick another name")
        result[name] = _cloud_image(value, f"images.{name}", name, named=True)
    return result


def _vm_image(value: Any, where: str, images: dict[str, CloudImage]) -> str | CloudImage:
    if isinstance(value, dict):
        return _cloud_image(value, where, None, named=False)
    if isinstance(value, str) and value in IMAGES:
        return value
    if isinstance(value, str) and value in images:
        return images[value]
    raise LabFileError(where, f"unknown image {quote(value)}; valid images: "
                       f"{', '.join([*IMAGES, *images])}, or a mapping {{url, sha256}}")


def _cloud_image(value: Any, where: str, name: str | None, named: bool) -> CloudImage:
    keys = IMAGE_KEYS - {"name"} if named else IMAGE_KEYS
    image = _mapping(value, where, keys, required={"url"})
    if "sha256" not in image:
        raise LabFileError(f"{where}.sha256", "is required: the image file's SHA-256 (64 hex "
                           "digits, as `sha256sum` prints it); every download is checked against it")
    sha = image["sha256"]
    if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
        raise LabFileError(f"{where}.sha256", f"{quote(sha)} is not a SHA-256: use 64 hex digits")
    url = image["url"]
    try:
        # urlsplit silently drops tabs and newlines; a URL with any whitespace is refused
        parts = urlsplit(url) if isinstance(url, str) and url.isprintable() \
            and not any(c.isspace() for c in url) else None
    except ValueError:          # e.g. "http://[": a bracket that opens no IPv6 address
        parts = None
    if parts is None or parts.scheme not in URL_SCHEMES or not parts.path \
            or (parts.scheme == "file") == bool(parts.netloc not in ("", "localhost")):
        raise LabFileError(f"{where}.url", f"{quote(url)} is not a URL vnet can fetch; use "
                           f"{', '.join(s + '://' for s in URL_SCHEMES)} (file:///abs/path.qcow2)")
    if not named:
        name = _name(image["name"], f"{where}.name") if "name" in image else \
            f"cloud-{sha.lower()[:12]}"
    assert name is not None            # given when named, derived above otherwise
    return CloudImage(name=name, url=url, sha256=sha.lower())


# --- port forwards --------------------------------------------------------------------------

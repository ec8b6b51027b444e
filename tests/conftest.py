import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path("/usr/share/libvirt/schemas")


@pytest.fixture(scope="session")
def relaxng():
    """libvirt's own RelaxNG schemas (Debian: libvirt0), compiled once per session."""
    lxml = pytest.importorskip("lxml.etree", reason="lxml is missing: pip install .[test]")
    if not (SCHEMAS / "domain.rng").exists():
        pytest.skip(f"libvirt's RNG schemas are missing at {SCHEMAS}: apt-get install libvirt0")
    cache = {}

    def validate(xml: str) -> None:
        doc = lxml.fromstring(xml.encode())
        kind = doc.tag
        if kind not in cache:
            cache[kind] = lxml.RelaxNG(lxml.parse(str(SCHEMAS / f"{kind}.rng")))
        schema = cache[kind]
        if not schema.validate(doc):
            raise AssertionError(f"{kind} XML fails libvirt's schema: {schema.error_log}")
    return validate


def regen_golden() -> bool:
    return os.environ.get("VNET_REGEN_GOLDEN") == "1"

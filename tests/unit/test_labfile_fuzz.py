"""Property: whatever bytes arrive as a lab file, `vnet render` exits 0 or 2 (one line), never
crashes (exit 1 or 3, a traceback), writes nothing on 2, and answers within hypothesis' deadline
of one second per case."""
import copy
import os
import tempfile
from pathlib import Path
from unittest import mock

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner import labfile
from provisioner.cli import main
from provisioner.errors import LabFileError

from .test_labfile_strict import FULL

FUZZ = settings(max_examples=int(os.environ.get("VNET_FUZZ_EXAMPLES", "150")), deadline=1000, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True) | st.text(max_size=30)
           | st.sampled_from(["tiny", "lan", "web1", "natnetwork", "hostonly", "nat", "bridged",
                              "internal", "virtio", "sriov", "vdpa", "tcp", "udp", "x\n", "",
                              "192.168.150.0/24", "100.64.0.0/10", "52:54:00:aa:bb:01",
                              "/dev/vhost-vdpa-0", "0000:04:10.1", "http://[", "file:///x"]))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12) | scalars.filter(
                        lambda v: not isinstance(v, float)), inner, max_size=4),
                    max_leaves=25)
yamlish = st.text(alphabet=st.sampled_from(list("abnmtv01:-[]{}&*!|>'\"#%@`,?.<= \n\t")),
                  max_size=300)


def paths(node, prefix=()):
    """Every (path) into a nested lab structure, so a strategy can replace any part of it."""
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        yield from paths(value, (*prefix, key))


FULL_PATHS = list(paths(FULL))[1:]


@st.composite
def mutated_labs(draw):
    """The valid full lab with one to three parts replaced by junk: reaches deep validation."""
    data = copy.deepcopy(FULL)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(FULL_PATHS))
        node = data
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = draw(junk)
        except (KeyError, IndexError, TypeError):
            pass           # an earlier replacement removed this path
    return data


def check(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lab, out, state = tmp / "lab.yaml", tmp / "out", tmp / "state"
        lab.write_bytes(raw)
        with mock.patch.dict(os.environ, {"VNET_STATE_DIR": str(state)}):
            result = CliRunner().invoke(main, ["render", str(lab), "--out", str(out)])
            try:
                labfile.load(lab)
                loaded = True
            except LabFileError:
                loaded = False
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            f"{type(result.exception).__name__}: {result.exception}"
        assert result.exit_code in (0, 2), result.output
        assert not state.exists()
        assert loaded == (result.exit_code == 0)
        if result.exit_code == 2:
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("vnet: error: "), result.output
            assert not out.exists()


@FUZZ
@given(yamlish)
def test_yamlish_text(text):
    check(text.encode())


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(raw):
    check(raw)


@FUZZ
@given(junk)
def test_random_structures_dumped_as_yaml(data):
    check(yaml.safe_dump(data).encode())


@FUZZ
@given(mutated_labs())
def test_the_full_lab_with_junk_in_it(data):
    check(yaml.safe_dump(data).encode())

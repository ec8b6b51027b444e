"""The processes a lab runs on the host beside its VMs, each recorded in the lab's directory
(host/procs.py records: PID, start time, marker): its port proxies, its OpenFlow controller, the
Ansible run started while its guests boot, and packet captures (vnet verify's of tunnel
underlays, `vnet capture`). Wherever a lab goes (destroy, gc, a failed `up`, its sandbox's
`down`), they are stopped together by their records, so none outlives it, not even one whose
vnet was killed before it could stop it itself."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from . import capture, controller, forwarding, procs

# The early Ansible run's record, written by its gate (verify/earlyrun.py)
EARLY_RUN_RECORD = Path("ansible", "gate", "ansible.pid")


def stop_all(lab_dir: Path, progress: Callable[[str], None]) -> None:
    forwarding.stop_proxy(lab_dir, progress)
    controller.stop(lab_dir, progress)
    procs.stop(Path(lab_dir) / EARLY_RUN_RECORD, progress)
    capture.stop_recorded(lab_dir, progress)

"""NIC models as data. Each model is one module in this package that defines MODEL."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from ..model import Backend


@dataclass(frozen=True)
class NicModel:
    name: str
    summary: str
    libvirt_interface: str | None     # "emulated" | "hostdev" | "vdpa"; None: not on libvirt
    libvirt_model: str | None         # <model type=...> for emulated NICs
    virtualbox_type: str | None       # --nictypeN value; None: VirtualBox cannot do it
    guest_driver: str | None          # the kernel driver the guest should bind
    needs_hardware: str | None = None # what the host must have (SR-IOV VF, vDPA device)

    def supports(self, backend: Backend) -> bool:
        if backend is Backend.VIRTUALBOX:
            return self.virtualbox_type is not None
        return self.libvirt_interface is not None


def _load() -> dict[str, NicModel]:
    models = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        model = importlib.import_module(f"{__name__}.{info.name}").MODEL
        models[model.name] = model
    return models


NIC_MODELS: dict[str, NicModel] = _load()


def names(backend: Backend | None = None) -> list[str]:
    return [m.name for m in NIC_MODELS.values() if backend is None or m.supports(backend)]

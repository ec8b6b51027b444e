"""Field checks for the lab loader: each takes the value and its path in the lab file
("vms.web.nics[1].network") and raises LabFileError naming that path and the valid choices."""
from __future__ import annotations

from typing import Any

from ..errors import LabFileError, quote
from .model import check_name


def _mapping(value: Any, where: str, keys: set[str], required: set[str]) -> dict:
    if not isinstance(value, dict):
        raise LabFileError(where or "(top level)", "must be a mapping of keys to values")
    unknown = sorted(set(map(_cut, value)) - keys)
    if unknown:
        raise LabFileError(f"{where}.{unknown[0]}" if where else unknown[0],
                           f"unknown field; valid fields: {', '.join(sorted(keys))}")
    missing = sorted(required - set(value))
    if missing:
        raise LabFileError(f"{where}.{missing[0]}" if where else missing[0], "is required")
    return value


def _list(value: Any, where: str, non_empty: bool = False) -> list:
    if not isinstance(value, list):
        raise LabFileError(where, "must be a list")
    if non_empty and not value:
        raise LabFileError(where, "must not be empty")
    return value


def _name(value: Any, where: str) -> str:
    return check_name(value, where)


def _choice(value: Any, where: str, choices, what: str, valid: str) -> str:
    """A string that is one of `choices` (type checked first: a list or mapping is no key)."""
    if not isinstance(value, str) or value not in choices:
        raise LabFileError(where, f"unknown {what} {quote(value)}; {valid}: {', '.join(choices)}")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LabFileError(where, f"{quote(value)} must be a whole number from {low} to {high}")
    return value


def _cut(key: Any) -> str:
    """A mapping key from the file as it appears in a field path, cut to a readable length."""
    text = str(key)
    text = text if text.isprintable() and text.strip() == text and text else repr(text)
    return text if len(text) <= 40 else text[:39] + "\u2026"

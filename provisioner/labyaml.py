"""Lab file bytes -> plain data, strictly. A lab file is small, UTF-8, plain YAML: no anchors or
aliases (an alias bomb of 500 bytes never finishes expanding), no duplicate keys (the last one
would silently win), no deep nesting (the composer recurses). Anything else is one LabFileError
(exit 2) before a single value is used."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import LabFileError, quote

MAX_BYTES = 1 << 20          # the largest lab files are a few KiB
MAX_DEPTH = 32               # a lab nests 5 levels deep (lab, vms, vm, nics, nic)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without anchors, aliases, duplicate keys or nesting deeper than MAX_DEPTH."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _at(event.start_mark, "YAML anchors and aliases (& and *) are not allowed in "
                      "a lab file; write each value out")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _at(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _at(key_node.start_mark, "merge keys (<<) are not allowed in a lab "
                              "file; write each value out")
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    raise _at(key_node.start_mark, "a mapping key must be a plain value, "
                              "not a list or mapping") from None
                if first is not None:
                    raise _at(key_node.start_mark, f"duplicate key {quote(key)} (first at "
                              f"line {first})")
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _at(mark, message: str) -> LabFileError:
    return LabFileError("", f"line {mark.line + 1}: {message}")


def parse(path: Path) -> Any:
    """The data of the lab file at `path`; LabFileError (one line) on any fault."""
    try:
        with open(path, "rb") as f:               # bounded: a FIFO or /dev/zero cannot hang us
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise LabFileError("", f"cannot read lab file {path}: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise LabFileError("", f"lab file {path} is larger than {MAX_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabFileError("", f"lab file {path} is not UTF-8 text (byte {exc.start} is "
                           f"{raw[exc.start]:#04x})") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except LabFileError as exc:
        raise LabFileError("", f"{path}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
        detail = f": {quote(problem)}" if problem else ""
        raise LabFileError("", f"{path} is not valid YAML{where}{detail}") from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # e.g. an integer of 5000 digits (int() refuses it), a date like 2024-02-31
        raise LabFileError("", f"{path} holds a value vnet cannot read: "
                           f"{quote(str(exc))}") from None

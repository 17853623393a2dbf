"""Fixtures: a real MicroPython interpreter (npm WebAssembly port) with the firmware loaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.micropython_vm import MicroPythonVM, available

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "node"


def load_vectors(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())
    return data


@pytest.fixture(scope="module")
def vm() -> Iterator[MicroPythonVM]:
    reason = available()
    if reason:
        pytest.fail(f"real MicroPython is required for firmware tests: {reason}")
    with MicroPythonVM() as machine:
        yield machine


class EmulatedNode:
    """The real firmware under MicroPython (hil/mp/harness.py) driven from CPython."""

    def __init__(self, vm: MicroPythonVM) -> None:
        self.vm = vm

    def setup(self, **kwargs: Any) -> None:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        self.vm.exec(f"import harness as h\nh.setup({args})")

    def run(self, ms: int, rx: bytes = b"", step_ms: int = 100) -> bytes:
        out = self.vm.call_json(f"h.run({ms}, {step_ms}, {rx.hex()!r})")
        return bytes.fromhex(out)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.vm.call_json("h.status()")
        return status

    def eval(self, expr: str) -> Any:
        return self.vm.call_json(expr)


@pytest.fixture()
def node(vm: MicroPythonVM) -> EmulatedNode:
    vm.exec("import os\nfor f in os.listdir():\n    os.remove(f)\n")  # a fresh flash
    return EmulatedNode(vm)

"""A real MicroPython interpreter (the npm WebAssembly port under Node.js) as a co-process.

Tests and the HIL node emulator use :class:`MicroPythonVM` to run the firmware's own files
under MicroPython, not CPython: ``vm.exec(code)`` runs code in one persistent interpreter and
returns what it printed; ``vm.call_json(expr)`` evaluates an expression and decodes the
JSON it prints.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DRIVER = REPO / "hil" / "mpwasm.mjs"
FIRMWARE = REPO / "firmware"
HIL_MP = REPO / "hil" / "mp"
WASM_PACKAGE = (
    FIRMWARE / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
)


class MicroPythonError(RuntimeError):
    """Code run inside MicroPython raised; the message holds the MicroPython traceback."""


def available() -> str | None:
    """``None`` if the VM can run here, else the reason it cannot (for skip messages)."""
    if shutil.which("node") is None:
        return "node (Node.js) is not installed"
    if not (WASM_PACKAGE / "micropython.mjs").exists():
        return "MicroPython wasm missing: run `npm ci --prefix firmware/` (scripts/setup.sh test)"
    return None


class MicroPythonVM:
    """One MicroPython interpreter with the firmware (``/fw``) and HIL helpers (``/hil``)."""

    def __init__(self, heapsize: int = 256 * 1024, mounts: dict[str, Path] | None = None,
                 workdir: str = "/flash", timeout_s: float = 60.0) -> None:
        reason = available()
        if reason:
            raise RuntimeError(reason)
        mounts = mounts if mounts is not None else {"/fw": FIRMWARE, "/hil": HIL_MP}
        opts = {
            "heapsize": heapsize,
            "mounts": [[vfs, str(host)] for vfs, host in mounts.items()],
            "workdir": workdir,
        }
        self.timeout_s = timeout_s
        self._proc = subprocess.Popen(
            ["node", str(DRIVER), json.dumps(opts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def exec(self, code: str) -> str:
        """Run ``code`` in the interpreter; return its printed output or raise."""
        proc = self._proc
        if proc.stdin is None or proc.stdout is None or proc.poll() is not None:
            raise MicroPythonError("MicroPython process is not running")
        proc.stdin.write(json.dumps({"code": code}) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise MicroPythonError(f"MicroPython process ended: {err.strip()[-2000:]}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise MicroPythonError(f"{reply.get('error', '')}\n{reply.get('out', '')}")
        return str(reply["out"])

    def call_json(self, expr: str, setup: str = "") -> Any:
        """Evaluate ``expr`` after ``setup`` and return ``json.loads`` of ``json.dumps(expr)``."""
        out = self.exec(f"{setup}\nimport json as _j\nprint(_j.dumps({expr}))")
        return json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> MicroPythonVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

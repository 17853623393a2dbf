"""Import each named module in a pristine interpreter state; print the ones that fail.

Run as a script by tests/architecture/test_layers.py. The parent imports nothing of the
project; for every module it forks, and the child imports just that module (so its
``sys.modules`` holds only the interpreter's start-up modules), as ``python -c 'import m'``
would, at a fraction of the cost of one interpreter per module.
"""

from __future__ import annotations

import os
import sys


def main(modules: list[str]) -> int:
    failed = 0
    for name in modules:
        pid = os.fork()
        if pid == 0:
            try:
                __import__(name)
            except BaseException as exc:  # report any failure, including SystemExit
                print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

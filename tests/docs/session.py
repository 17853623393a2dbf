"""Run the shell blocks of a page as a new user would, on a machine of their own.

A page's blocks run in order, each in ``bash -e -o pipefail``, in one scratch working
directory that looks like a checkout (every top-level entry of the repository is linked into
it, new files land in the scratch directory) and inside private Linux namespaces that the
harness creates as root:

* a **network namespace** with only ``lo``: fixed ports (1883, 8080, 8883) are free, nothing
  reaches the internet, and the documented host names (``mqtt.gent.example`` …) resolve to
  127.0.0.1 through the private ``/etc/hosts``;
* a **UTS namespace** whose host name is ``gw-gent-0001``, the gateway of the pages' examples;
* a **mount namespace** in which ``/etc``, ``/var/lib``, ``/opt`` and ``/dev`` are overlays
  whose writes land in the scratch directory, and ``/tmp`` is a private tmpfs. So a page that
  writes ``/etc/duet-edge/gateway.toml``, adds the ``duet`` user or links ``/dev/ttyUSB0``
  runs exactly as written and leaves the machine as it was.

Serial devices are pty emulators linked where the page expects hardware (:data:`DEVICES`):
``/dev/ttyUSB0`` is an SDS011, ``/dev/ttyUSB1`` the real node firmware under MicroPython, …
They start when a block first names the path.

Long-running commands run with reduced arguments (:data:`SUBSTITUTIONS`); every substitution
is listed there with its reason. A block marked ``needs:`` is not run; where later blocks rely
on what it would have done, :data:`STAND_INS` does that instead (e.g. the install block's venv
is the test venv). The ``editor`` a page opens is a stand-in that leaves the file as it is.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.docs.blocks import ROOT, Block, Step, console_steps, expects_failure, missing_lines

VENV = Path(sys.prefix)

# Pages a person follows one after the other on one machine (issue 15): one session, so a page
# may rely on what the pages before it set up, and must not rely on anything else.
STORY = ("README.md", "docs/deployment.md", "docs/provisioning.md", "docs/status-page.md",
         "docs/calibration.md", "docs/quality.md")

# Where a page expects hardware: the emulator that stands in (python -m … ARGS --link PATH).
DEVICES: dict[str, list[str]] = {
    "/dev/ttyUSB0": ["hil.emulators", "sds011"],
    "/dev/ttyUSB1": ["hil.node_emulator", "--kind", "air"],
    "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0": ["hil.emulators", "sds011"],
}

# (pattern, replacement, why): applied to a block's text before it runs. Keep this short: a
# substitution is a place where the page is not run as written.
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (r"(python -m pytest)(?! --collect-only)", r"\1 --collect-only -q -p no:cacheprovider",
     "a page's test command is collected (its selection must exist); the suite runs the tests"),
    (r"demo --duration 30\b", "demo --duration 6", "the demo's page is up after a few seconds"),
    (r"bench_realload\.py --minutes 5( --baseline-rev \S+)?",
     "bench_realload.py --minutes 0.05 --scenarios online",
     "5 minutes of real load per case"),
    (r"quality evaluate( +)(#|--twin-noise 0)", r"quality evaluate --faults spike,stuck\1\2",
     "every fault type twice is a minute; two types show the table"),
    (r"bench_spine\.py all", "bench_spine.py wire 4", "minutes of benchmarks"),
    (r"bench_spine\.py wire 300", "bench_spine.py wire 4", "300 s of traffic (4 s: more than one "
     "2 s batch window)"),
    (r"bench_web\.py --seconds 6 --rounds 4", "bench_web.py --seconds 0.5 --rounds 1",
     "100 s of load"),
    (r"bench_quality\.py$", "bench_quality.py --batches 50 --repeats 1", "a minute of timing"),
    (r"bench_decoders\.py$", "bench_decoders.py --frames 2000", "a minute of timing"),
]


def substitute(text: str) -> str:
    for pattern, replacement, _why in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text, flags=re.M)
    return text


@dataclass
class Result:
    """What running one block gave."""

    block: Block
    ran: bool
    ok: bool
    output: str = ""
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


_SETUP = r"""
set -e
R="$1"
shift
ip link set lo up
hostname gw-gent-0001
for d in etc var/lib opt dev; do
  mkdir -p "$R/upper/$d" "$R/wd/$d"
done
mkdir -p "$R/keep"
mount --rbind /dev "$R/keep"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$R/upper/etc,workdir=$R/wd/etc" /etc
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$R/upper/var/lib,workdir=$R/wd/var/lib" /var/lib
mount -t overlay overlay -o "lowerdir=/opt,upperdir=$R/upper/opt,workdir=$R/wd/opt" /opt
mount -t overlay overlay -o "lowerdir=/dev,upperdir=$R/upper/dev,workdir=$R/wd/dev" /dev
for sub in pts shm mqueue; do
  if [ -d "$R/keep/$sub" ]; then mount --rbind "$R/keep/$sub" "/dev/$sub"; fi
done
# a private /tmp, but the checkout and the venv stay where they are even when they live in /tmp
# (CI clones into a temporary folder)
i=0
for keep in "$@"; do
  case "$keep" in /tmp|/tmp/*) mkdir -p "$R/keep-$i"; mount --rbind "$keep" "$R/keep-$i";; esac
  i=$((i + 1))
done
mount -t tmpfs tmpfs /tmp
i=0
for keep in "$@"; do
  case "$keep" in /tmp|/tmp/*) mkdir -p "$keep"; mount --rbind "$R/keep-$i" "$keep";; esac
  i=$((i + 1))
done
mkdir -p /dev/serial/by-id
printf '127.0.0.1 mqtt.gent.example mqtt.twin.example twin.gent.example twin.example\n' >> /etc/hosts
touch "$R/ready"
exec sleep infinity
"""


class Session:
    """One machine of a new user's: namespaces, a scratch checkout and the fixtures."""

    def __init__(self, name: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"duet-doc-{name}-", dir="/var/tmp"))
        self.work = self.root / "work"
        self.work.mkdir()
        for entry in ROOT.iterdir():
            if entry.name not in {".pytest_cache", "test-artifacts"}:
                (self.work / entry.name).symlink_to(entry)
        if not (self.work / ".venv").exists():
            (self.work / ".venv").symlink_to(VENV)
        self.bin = self.root / "bin"
        self.bin.mkdir()
        editor = self.bin / "editor"
        editor.write_text("#!/bin/sh\n# stand-in: the technician leaves the file as it is\n")
        editor.chmod(0o755)
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.env = {
            "PATH": f"{self.bin}:{VENV / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                    "/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb",
            "NO_COLOR": "1", "COLUMNS": "120", "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--uts", "--propagation", "private", "--",
             "bash", "-c", _SETUP, "setup", str(self.root), str(ROOT.resolve()),
             str(VENV.resolve())],
            stdout=subprocess.DEVNULL, stderr=open(self.logs / "setup.log", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + 20
        while not (self.root / "ready").exists():
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("namespace set-up failed: "
                                   + (self.logs / "setup.log").read_text(errors="replace"))
            time.sleep(0.02)
        self.background: list[subprocess.Popen[bytes]] = []
        self.devices: set[str] = set()
        self.fixtures: set[str] = set()

    # -- processes inside the namespaces -------------------------------------------------
    def _enter(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "-u", f"--wd={self.work}", "--"]

    def run(self, command: str, timeout: float, stop_after: float | None = None,
            stdin: str | None = None) -> tuple[int, str]:
        """Run bash code inside; exit status and stdout+stderr as one stream. With
        ``stop_after``, a command still running then gets SIGINT (status 0 if it stops)."""
        proc = subprocess.Popen(
            [*self._enter(), "bash", "-e", "-o", "pipefail", "-c", command],
            cwd=self.work, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE, start_new_session=True)
        limit = stop_after if stop_after is not None else timeout
        try:
            out, _ = proc.communicate(stdin.encode() if stdin else None, timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                out, _ = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
                return 124, out.decode(errors="replace") + "\n[doctest] did not stop on SIGINT"
            text = out.decode(errors="replace")
            if stop_after is None:
                return 124, text + f"\n[doctest] timed out after {timeout:.0f} s"
            return (0 if proc.returncode in (0, 130, -signal.SIGINT) else proc.returncode), text
        return proc.returncode, out.decode(errors="replace")

    def spawn(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([*self._enter(), *argv], cwd=self.work, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.background.append(proc)
        return proc

    def wait_for(self, check: str, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.run(check, 10)[0] != 0:
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text(errors="replace")[-1500:]
                                 for p in self.logs.glob("*.log"))
                raise RuntimeError(f"{what} did not come up\n{logs}")
            time.sleep(0.2)

    # -- what a block needs ----------------------------------------------------------------
    def ensure_devices(self, text: str) -> None:
        for path, emulator in DEVICES.items():
            if path in text and path not in self.devices:
                argv = [str(VENV / "bin" / "python"), "-m", *emulator, "--link", path]
                self.spawn(argv, "emulator-" + Path(path).name)
                self.wait_for(f"test -e {path}", f"the emulator on {path}")
                self.devices.add(path)

    def ensure_fixtures(self, names: tuple[str, ...]) -> None:
        for name in names:
            if name not in FIXTURES:
                raise KeyError(f"unknown doctest fixture {name!r}; known: {', '.join(FIXTURES)}")
            if name not in self.fixtures:
                FIXTURES[name](self)
                self.fixtures.add(name)

    def close(self) -> None:
        for proc in reversed(self.background):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.background:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.holder.kill()
        self.holder.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- blocks ----------------------------------------------------------------------------
    def save_file(self, block: Block) -> Result:
        """A block the page tells the reader to save as a file."""
        assert block.file
        code, out = self.run(f'mkdir -p "$(dirname {block.file})" && cat > {block.file}', 30,
                             stdin=block.text)
        return Result(block, code == 0, code == 0, out, [] if code == 0 else ["cannot save"])

    def run_block(self, block: Block) -> Result:
        if block.file:
            return self.save_file(block)
        if block.needs:
            stand_in = STAND_INS.get(_first_line(block.text))
            if stand_in:
                code, out = self.run(stand_in, 60)
                if code:
                    return Result(block, False, False, out, [f"stand-in failed ({code})"])
            return Result(block, False, True)
        started = time.monotonic()
        text = substitute(block.text)
        self.ensure_devices(text)
        self.ensure_fixtures(block.fixtures)
        if block.lang == "console":
            result = self._run_console(block, text)
        else:
            code, out = self.run(text, block.timeout, block.stop_after)
            wanted = 0 if block.exit_code is None else block.exit_code
            problems = [] if code == wanted else [f"exit status {code}, expected {wanted}"]
            problems += _traceback(out)
            result = Result(block, True, not problems, out, problems)
        result.seconds = time.monotonic() - started
        return result

    def _run_console(self, block: Block, text: str) -> Result:
        problems: list[str] = []
        outputs: list[str] = []
        steps: list[Step] = console_steps(text)
        if not steps:
            problems.append("a console block without a `$ ` command")
        for step in steps:
            code, out = self.run(step.command, block.timeout, block.stop_after)
            outputs.append(f"$ {step.command}\n{out}")
            if block.exit_code is not None:
                failed = code != block.exit_code
            else:
                failed = (code == 0) == expects_failure(step.expected)
            if failed:
                problems.append(f"`{_first_line(step.command)}` exited {code}")
            problems += _traceback(out)
            missing = missing_lines(step.expected, out)
            if missing:
                problems.append(f"`{_first_line(step.command)}`: output lacks "
                                + " | ".join(missing[:3]))
        return Result(block, True, not problems, "\n".join(outputs), problems)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _traceback(output: str) -> list[str]:
    return ["a traceback in the output"] if "Traceback (most recent call last)" in output else []


# -- fixtures named by `<!-- doctest: fixture NAME -->` -------------------------------------
def _sta_server(session: Session) -> None:
    """A SensorThings v1.1 server (tests/plugins/sta_server.py's) at
    http://twin.gent.example/sensorthings/v1.1 inside the session."""
    session.env.update({"DJANGO_SETTINGS_MODULE": "tests.plugins.sta_django_settings",
                        "DUET_STA_DB": str(session.root / "sta.sqlite3"),
                        "DUET_STA_URL": "http://twin.gent.example/sensorthings",
                        "DUET_STA_HOSTS": "twin.gent.example",
                        "PYTHONPATH": str(ROOT)})
    session.spawn([str(VENV / "bin" / "python"), "-m", "tests.plugins.sta_serve",
                   "127.0.0.1:80"], "sta-server")
    session.wait_for("python3 -c 'import urllib.request as u; "
                     "u.urlopen(\"http://twin.gent.example/sensorthings/v1.1/\", timeout=2)'",
                     "the SensorThings server", timeout=60)


def _mosquitto(session: Session) -> None:
    """The broker `provision broker-config` rendered, started as its output says."""
    session.spawn(["mosquitto", "-c", "broker/mosquitto.conf"], "mosquitto")
    session.wait_for("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", "
                     "8883), 1)'", "the TLS broker")


def _plain_mosquitto(session: Session) -> None:
    """A plain Mosquitto on 1883, the Debian package's default listener, for pages whose
    commands talk to the twin's broker without TLS."""
    conf = session.root / "mosquitto-plain.conf"
    conf.write_text("listener 1883 127.0.0.1\nallow_anonymous true\nuser root\n")
    session.spawn(["mosquitto", "-c", str(conf)], "mosquitto-plain")
    session.wait_for("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", "
                     "1883), 1)'", "the broker on 1883")


FIXTURES: dict[str, Callable[[Session], None]] = {
    "mosquitto": _plain_mosquitto,
    "sta-server": _sta_server,
    "tls-broker": _mosquitto,
}

# What a block marked `needs:` would have left behind, for the blocks after it: keyed by the
# block's first line.
STAND_INS: dict[str, str] = {
    # installing bluez creates the bluetooth group the next block adds `duet` to
    "apt-get update": "groupadd --system --force bluetooth",
    # the checkout and venv of the install block: this repository and the test venv
    "git clone <duet-edge repository> /opt/duet-edge/src":
        f"mkdir -p /opt/duet-edge && ln -sfn {ROOT} /opt/duet-edge/src "
        f"&& ln -sfn {VENV} /opt/duet-edge/venv",
}

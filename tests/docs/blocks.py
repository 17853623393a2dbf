"""The fenced blocks of the project's Markdown, and the markers that say how to run them.

Every fenced block of README.md, CONTRIBUTING.md, docs/**/*.md and edge/sensors/*/README.md
declares a language. Blocks in a shell language (``bash``, ``sh``, ``shell``, ``console``) are run by
``tests/docs/test_shell_blocks.py`` unless an HTML comment right before the fence marks them
as needing what a test machine does not have. The vocabulary (CONTRIBUTING.md explains it for
authors):

``<!-- needs: KIND reason -->``
    not run; KIND is one of :data:`NEEDS`, and the reason says what exactly is needed.
``<!-- doctest: fixture NAME [NAME …] -->``
    run, after the harness has set up the named fixtures (:data:`FIXTURES` in
    ``tests/docs/session.py``), e.g. a SensorThings server or a broken set-up to diagnose.
``<!-- doctest: exit N -->``
    run; every command of the block must exit with N (default: 0, or non-zero for a console
    command whose documented output has a ``✗``/``error:``/``FAIL`` line).
``<!-- doctest: timeout S -->``
    run with S seconds instead of the default 120.
``<!-- doctest: stop-after S -->``
    a command that runs until stopped (a receiver, the gateway): it must still be running, or
    have exited 0, after S seconds; then it gets SIGINT and must stop without a traceback.
``<!-- doctest: file PATH -->`` (on any block)
    the block's text is what the reader saves as PATH: the harness writes it there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
NEEDS = {
    "hardware": "a real sensor, firmware node, USB adapter or Bluetooth radio",
    "systemd": "a running systemd (systemctl, journalctl, unit files in /etc/systemd)",
    "root-system": "changes the machine itself (apt-get, pip into a system path, "
                   "the test suite or CI)",
    "network": "a host on the internet (a public repository, the real twin)",
}
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([\w+-]*)[^\n]*$")
_MARKER = re.compile(r"^<!--\s*(needs|doctest):\s*(.*?)\s*-->\s*$")


def doc_paths() -> list[Path]:
    """Every Markdown page a user reads: new pages in docs/ are picked up by themselves."""
    found = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted((ROOT / "edge" / "sensors").glob("*/README.md"))]
    return [p for p in found if "node_modules" not in p.parts]


@dataclass
class Block:
    """One fenced block: where it is, its language, its text and the markers before it."""

    doc: str
    line: int
    lang: str
    text: str
    needs: tuple[str, str] | None = None
    fixtures: tuple[str, ...] = ()
    exit_code: int | None = None
    timeout: float = 120.0
    stop_after: float | None = None
    file: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.lang in SHELL_LANGS


def _apply_marker(block: Block, kind: str, body: str) -> None:
    if kind == "needs":
        what, _, reason = body.partition(" ")
        if what not in NEEDS:
            block.problems.append(f"unknown needs kind {what!r}; known: {', '.join(NEEDS)}")
        elif not reason.strip(" —-:"):
            block.problems.append(f"'needs: {what}' without a reason")
        block.needs = (what, reason.strip(" —-:"))
        return
    word, _, rest = body.partition(" ")
    if word == "fixture":
        block.fixtures += tuple(rest.split())
    elif word == "exit":
        block.exit_code = int(rest)
    elif word == "timeout":
        block.timeout = float(rest)
    elif word == "stop-after":
        block.stop_after = float(rest)
    elif word == "file":
        block.file = rest.strip()
    else:
        block.problems.append(f"unknown doctest marker {body!r}")


def parse(path: Path) -> list[Block]:
    """The fenced blocks of one page, in order, with their markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = str(path.relative_to(ROOT))
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, fence, lang = opened.groups()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence)
                                      and not lines[j].strip()[len(fence):].strip()):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        block = Block(rel, i + 1, lang, "\n".join(body) + "\n")
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        while k >= 0 and (marker := _MARKER.match(lines[k].strip())):
            _apply_marker(block, marker.group(1), marker.group(2))
            k -= 1
        blocks.append(block)
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in doc_paths() for block in parse(path)]


@dataclass
class Step:
    """One command of a console block with the output the page shows for it."""

    command: str
    expected: list[str]


def console_steps(text: str) -> list[Step]:
    """``$ command`` lines (``\\`` continues a command) and the output lines after each."""
    steps: list[Step] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if steps:
                steps[-1].expected.append(line)
            i += 1
            continue
        command = [line[2:]]
        while command[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
        steps.append(Step("\n".join(command), []))
        i += 1
    return steps


_NUMBER = re.compile(r"\d+(?:,\d{3}\b)*(?:[.,]\d+(?![\da-f]))?")
_HEX = re.compile(r"\b[0-9a-f]{8,}\b")


def line_pattern(expected: str) -> re.Pattern[str]:
    """An expected output line as a pattern, with the documented tolerance: ``…`` stands for
    any text, every number (counts, sizes, dates, times, durations) for any number, every hex
    string of 8 or more digits (serials, fingerprints, ids) for any hex string, and runs of
    blanks for any blanks. Words, symbols, option names and paths must match."""
    out = []
    pos = 0
    tokens = re.compile(r"…|\s+|" + _HEX.pattern + "|" + _NUMBER.pattern)
    for found in tokens.finditer(expected):
        out.append(re.escape(expected[pos:found.start()]))
        token = found.group(0)
        if token == "…":
            out.append(".*?")
        elif token.isspace():
            out.append(r"\s+")
        elif _HEX.fullmatch(token):
            out.append(r"[0-9a-f]+…?")
        else:
            out.append(r"-?\d+(?:,\d{3})*(?:[.,]\d+)?")
        pos = found.end()
    out.append(re.escape(expected[pos:]))
    return re.compile("".join(out))


def missing_lines(expected: list[str], actual: str) -> list[str]:
    """Expected lines (blank ones ignored) that do not appear, in order, in the actual output."""
    actual_lines = [line.strip() for line in actual.splitlines()]
    missing = []
    at = 0
    for line in (e.strip() for e in expected):
        if not line:
            continue
        pattern = line_pattern(line)
        for k in range(at, len(actual_lines)):
            if pattern.fullmatch(actual_lines[k]):
                at = k + 1
                break
        else:
            missing.append(line)
    return missing


def expects_failure(expected: list[str]) -> bool:
    return any(line.lstrip().startswith(("✗", "error:", "FAIL ")) for line in expected)

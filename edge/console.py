"""Output conventions of every `duet-edge` command (docs/provisioning.md, "Exit codes").

* Results go to stdout, every ``✗`` error, ``!`` warning and progress display to stderr, so a
  script can parse stdout (``--json`` where a script would) and still show what went wrong.
* Rich never wraps, folds or truncates a line (``soft_wrap``): ids, ports, paths, serials and
  commands stay whole and copyable at any terminal width; the terminal wraps long lines.
* ``--help`` is click's plain text: no Rich panels that cut defaults at 80 columns, no Rich
  markup that would swallow ``[bracketed]`` text.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperCommand, TyperGroup

EXIT_OK = 0
EXIT_FAILED = 1  # refused or failed: the ✗ line says what to change
EXIT_USAGE = 2  # a bad option or argument (click)
EXIT_NOT_INSTALLED = 3  # a needed extra or tool is not installed
EXIT_UNREACHABLE = 4  # the twin or broker did not answer or refused: retry later

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``✗ message`` on stderr; the caller raises the returned ``typer.Exit``."""
    err.print(f"[red]✗[/red] {escape(message)}")
    return typer.Exit(code)


def warn(message: str) -> None:
    err.print(f"[yellow]![/yellow] {escape(message)}")


_DL_ROW = re.compile(r"^( *\S(?:.*?\S)?)( {2,})(\S.*)$")  # "  --opt <x>   its help"


def rewrap_help(text: str, width: int) -> str:
    """Re-wrap click's help ``text`` (laid out without a width limit) to ``width`` without
    ever splitting a word, at hyphens or otherwise: paths, ids and commands stay whole.
    Definition rows keep their hanging indent."""
    out = []
    for line in text.splitlines():
        if len(line) <= width:
            out.append(line)
            continue
        row = _DL_ROW.match(line)
        if row and len(row.group(1)) + len(row.group(2)) <= width // 2:
            head = row.group(1) + row.group(2)
            body = row.group(3)
        else:
            head = line[: len(line) - len(line.lstrip())]
            body = line.strip()
        hang = " " * len(head)
        filled = textwrap.fill(body, width, initial_indent=hang, subsequent_indent=hang,
                               break_on_hyphens=False, break_long_words=False)
        out.append(head + filled[len(hang):])
    return "\n".join(out)


class _WholeWordsHelp:
    """``--help`` as click's plain text, wrapped by :func:`rewrap_help`."""

    def get_help(self, ctx: Any) -> str:
        formatter = ctx.make_formatter()
        width = formatter.width
        formatter.width = 10_000  # lay out on one line each, then wrap whole words
        self.format_help(ctx, formatter)  # type: ignore[attr-defined]
        return rewrap_help(formatter.getvalue().rstrip("\n"), width)


class PlainHelpCommand(_WholeWordsHelp, TyperCommand):
    """A command whose ``--help`` is plain text (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rich_markup_mode = None


class PlainHelpGroup(_WholeWordsHelp, TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rich_markup_mode = None

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Each sub-command with its whole first sentence (click cuts it with '...')."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class PlainTyper(typer.Typer):
    """``typer.Typer`` whose groups and commands print plain ``--help``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", PlainHelpGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        kwargs.setdefault("cls", PlainHelpCommand)
        return super().command(*args, **kwargs)


class LateProgress:
    """A progress bar on stderr that appears only when the work takes longer than ``after_s``.

    ``advance()`` after each unit of work; quick runs print nothing at all.
    """

    def __init__(self, what: str, total: int, after_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 console: Console | None = None) -> None:
        self.what, self.total, self.after_s, self.clock = what, total, after_s, clock
        self.console = console or err
        self.started = clock()
        self.done = 0
        self._progress: Progress | None = None
        self._task: Any = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._progress is None and self.clock() - self.started >= self.after_s:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.what, total=self.total)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __enter__(self) -> LateProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

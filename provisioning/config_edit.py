"""In-place edits of the gateway's TOML config that keep its comments and layout (tomlkit).

``provision node add`` appends a ``[[sources]]`` table and ``provision register`` maintains
``[uplinks.mqtt.datastream_ids]``. Both go through :class:`ConfigEdit`: the file is parsed
with tomlkit (which keeps every comment, blank line and key order), changed, validated with
the gateway's own schema, and written back atomically with its previous mode and owner.

A comment block just above a table header belongs to that header, but tomlkit stores it at
the end of the table before it. When a table is added after another one, that block is
moved below the new table so that it stays above the header it describes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, Comment, InlineTable, Item, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

Scalar = str | int | float | bool
Entry = Mapping[str, Scalar | Mapping[str, Scalar]]


class ConfigEditError(ValueError):
    """The config cannot be edited as asked; the message says what to change by hand."""


class ConfigEdit:
    """One read-change-validate-write cycle of a TOML config file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.doc: TOMLDocument = tomlkit.parse(self.path.read_text(encoding="utf-8"))
        except (OSError, tomlkit.exceptions.ParseError) as exc:
            raise ConfigEditError(f"cannot edit {self.path}: {exc}") from None

    @property
    def text(self) -> str:
        return self.doc.as_string()

    def add_source(self, entry: Entry) -> None:
        """Append a ``[[sources]]`` table after the last one (or at the end of the file)."""
        table = _table(entry)
        sources = self.doc.get("sources")
        if sources is None:
            last = next((item for key, item in reversed(self.doc.body) if key is not None), None)
            if isinstance(last, Table):
                _end_with_blank_line(_last_table(last))
            self.doc.append("sources", tomlkit.aot())
            sources = self.doc["sources"]
        if not isinstance(sources, AoT):
            raise ConfigEditError(f"{self.path}: 'sources' is not a list of [[sources]] tables; "
                                  "add the source by hand")
        if len(sources):
            _move_trailing_comments(sources[-1], table)
        sources.append(table)

    def merge_table(self, dotted: tuple[str, ...], values: Mapping[str, Scalar],
                    comment: str = "") -> bool:
        """Set ``values`` in the table at ``dotted`` (created as ``[a.b.c]`` if missing).

        Keys already there keep their place and comments; new keys are added at the end.
        Returns False when the parent table does not exist.
        """
        parent: Container | Table = self.doc
        for name in dotted[:-1]:
            child = parent.get(name)
            if not isinstance(child, Table):
                return False
            parent = child
        existing = parent.get(dotted[-1])
        if isinstance(existing, Table | InlineTable):
            for key, value in values.items():
                existing[key] = value
            return True
        if existing is not None:
            raise ConfigEditError(f"{self.path}: {'.'.join(dotted)} is not a table; "
                                  "remove that line and run the command again")
        table = tomlkit.table()
        if comment:
            table.add(tomlkit.comment(comment))
        for key, value in values.items():
            table[key] = value
        if isinstance(parent, Table):
            _move_trailing_comments(parent, table)
        parent.append(dotted[-1], table)
        return True

    def save(self, validate: Callable[[str], object]) -> None:
        """Validate the new text (``validate`` raises on a bad config), then replace the file
        atomically, keeping its mode and (when allowed) its owner."""
        text = self.text
        validate(text)
        _replace_keeping_mode(self.path, text.encode("utf-8"))


def source_text(entry: Entry) -> str:
    """``entry`` as a ``[[sources]]`` table in TOML text (what ``add_source`` would add)."""
    doc = tomlkit.document()
    doc.append("sources", tomlkit.aot())
    doc["sources"].append(_table(entry))
    return doc.as_string()


def _table(entry: Entry) -> Table:
    table = tomlkit.table()
    for key, value in entry.items():
        if isinstance(value, Mapping):
            inline = tomlkit.inline_table()
            inline.update(value)
            table[key] = inline
        else:
            table[key] = value
    return table


def _last_table(table: Table) -> Table:
    """The table whose body ends where ``table`` ends in the file (its last sub-table)."""
    for key, item in reversed(table.value.body):
        if key is None and isinstance(item, Whitespace | Comment):
            continue
        return _last_table(item) if isinstance(item, Table) else table
    return table


def _move_trailing_comments(before: Table, new: Table) -> None:
    """Move the comment block that ends ``before`` (it introduces the next header) below
    ``new``; keep one blank line between the tables."""
    body = _last_table(before).value.body
    start = len(body)
    while start and body[start - 1][0] is None and isinstance(body[start - 1][1], Whitespace | Comment):
        start -= 1
    first_comment = next((i for i in range(start, len(body))
                          if isinstance(body[i][1], Comment)), None)
    moved: list[Item] = []
    if first_comment is not None:
        moved = [item for _key, item in body[first_comment:]]
        del body[first_comment:]
    _end_with_blank_line(_last_table(before))
    new.add(tomlkit.nl())
    for item in moved:
        new.value.append(None, item)


def _end_with_blank_line(table: Table) -> None:
    body = table.value.body
    if not body or not isinstance(body[-1][1], Whitespace):
        table.value.append(None, tomlkit.nl())


def _replace_keeping_mode(path: Path, data: bytes) -> None:
    st = os.stat(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise

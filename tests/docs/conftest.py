"""``doc_runs``: the shell blocks of every page, run once per test session (tests/docs/session.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.docs.blocks import Block, all_blocks
from tests.docs.session import STORY, Result, Session


class DocRuns:
    """Runs a page's session on first demand and keeps every block's result."""

    def __init__(self) -> None:
        self.results: dict[str, Result] = {}
        self.blocks = all_blocks()

    @staticmethod
    def session_of(doc: str) -> tuple[str, ...]:
        return STORY if doc in STORY else (doc,)

    def result(self, block: Block) -> Result:
        if block.where not in self.results:
            self._run(self.session_of(block.doc))
        return self.results[block.where]

    def outputs(self, doc: str) -> list[Result]:
        """Every run block of a page, in order (for tests that check quoted numbers)."""
        return [self.result(b) for b in self.blocks if b.doc == doc and b.is_shell]

    def _run(self, docs: tuple[str, ...]) -> None:
        session = Session(docs[0].replace("/", "-").removesuffix(".md"))
        try:
            for doc in docs:
                for block in (b for b in self.blocks if b.doc == doc and (b.is_shell or b.file)):
                    self.results[block.where] = session.run_block(block)
        finally:
            session.close()


def can_run_namespaces() -> str | None:
    """Why the harness cannot run here, or None."""
    if os.geteuid() != 0:
        return "runs the pages as root in private namespaces (CI and the dev machines are root)"
    for tool in ("unshare", "nsenter", "ip", "mosquitto"):
        if not shutil.which(tool):
            return f"needs {tool}"
    return None


@pytest.fixture(scope="session")
def doc_runs() -> Iterator[DocRuns]:
    reason = can_run_namespaces()
    if reason:
        pytest.skip(reason)
    yield DocRuns()

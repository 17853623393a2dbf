"""Every shell block of README.md, docs/**/*.md and edge/sensors/*/README.md runs as written,
or is marked as needing what a test machine does not have (tests/docs/blocks.py for the
markers, tests/docs/session.py for how a page is run, CONTRIBUTING.md for authors).

A renamed option, a changed message or a missing step in a page fails here, not for a user.
"""

from __future__ import annotations

import pytest

from tests.docs.blocks import SHELL_LANGS, Block, all_blocks
from tests.docs.conftest import DocRuns
from tests.docs.session import DEVICES, FIXTURES, STAND_INS, STORY, SUBSTITUTIONS, substitute

BLOCKS = all_blocks()
SHELL = [b for b in BLOCKS if b.is_shell]


def test_the_harness_finds_the_pages_and_their_blocks() -> None:
    docs = {b.doc for b in BLOCKS}
    assert set(STORY) <= docs | {"README.md"}
    assert len(SHELL) > 40


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.where)
def test_every_fence_declares_a_language(block: Block) -> None:
    assert block.lang, (f"{block.where}: a fence without a language; shell blocks are "
                        f"{', '.join(sorted(SHELL_LANGS))}, anything else says what it is "
                        "(text, toml, json, ini, python, …)")


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.where)
def test_markers_are_known_and_only_on_shell_blocks(block: Block) -> None:
    assert not block.problems, f"{block.where}: {'; '.join(block.problems)}"
    if not block.is_shell:
        assert block.needs is None and not block.fixtures and block.stop_after is None, (
            f"{block.where}: only `doctest: file` goes on a non-shell block")
    for name in block.fixtures:
        assert name in FIXTURES, f"{block.where}: unknown fixture {name!r}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if not b.is_shell], ids=lambda b: b.where)
def test_no_transcript_hides_in_a_non_shell_block(block: Block) -> None:
    """A `$ command` transcript must be a console block, so that it is run."""
    assert not any(line.startswith("$ ") for line in block.text.splitlines()), (
        f"{block.where}: a `$ command` line in a ```{block.lang} block: make it ```console")


def test_stand_ins_and_substitutions_still_apply() -> None:
    """Each stand-in belongs to a marked block and each substitution changes some block, so
    the table shrinks when a page changes."""
    marked = {b.text.strip().splitlines()[0].strip() for b in SHELL if b.needs}
    assert set(STAND_INS) <= marked, set(STAND_INS) - marked
    import re
    for pattern, _new, why in SUBSTITUTIONS:
        assert any(re.search(pattern, b.text, re.M) for b in SHELL if not b.needs), why
    assert all(any(path in b.text for b in SHELL) for path in DEVICES)
    assert substitute("demo --duration 30") == "demo --duration 6"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.is_shell or b.file],
                         ids=lambda b: b.where)
def test_shell_block_runs_as_written(block: Block, doc_runs: DocRuns) -> None:
    result = doc_runs.result(block)
    if not result.ran and result.ok:
        assert block.needs
        pytest.skip(f"needs {block.needs[0]}: {block.needs[1]}")
    assert result.ok, (f"{block.where} ({result.seconds:.1f} s): {'; '.join(result.problems)}\n"
                       f"--- block ---\n{block.text}--- output ---\n{result.output[-4000:]}")

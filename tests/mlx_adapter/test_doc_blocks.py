"""The code blocks of README.md and docs/*.md tagged `<!-- doc-test: mlx -->`, run as written, one test each
(how: ``support.doc_blocks``; the convention: CONTRIBUTING.md, "Docs")."""

from __future__ import annotations

import pytest

from support.doc_blocks import Block, blocks_for, run_block

BLOCKS = blocks_for("mlx")


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_the_documented_block_runs_as_written(block: Block, doc_prelude: dict[str, str], tmp_path) -> None:
    run_block(block, tmp_path, doc_prelude)

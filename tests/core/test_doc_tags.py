"""Every fenced code block of README.md and docs/*.md says how it is tested (``<!-- doc-test: ... -->`` on the line
before its fence, ``support.doc_blocks``); a block that cannot run here is listed, one skipped test per block with
its reason, so no skip is silent."""

from __future__ import annotations

import pytest

from support.doc_blocks import ENVS, KINDS, LANGUAGES, Block, all_blocks

BLOCKS = all_blocks()
SKIPPED = [block for block in BLOCKS if block.kind == "skip"]


def test_every_block_has_a_doc_test_tag_with_a_known_kind():
    untagged = [f"{block.id} ({block.tag or 'no tag'})" for block in BLOCKS if block.kind not in KINDS]
    assert untagged == [], f"tag each with <!-- doc-test: ENV|skip REASON|output -->, ENV one of {ENVS}"


def test_every_block_tagged_to_run_is_in_a_language_the_harness_runs():
    unrunnable = [
        f"{block.id} ({block.language or 'plain'})"
        for block in BLOCKS
        if block.kind in ENVS and block.language not in LANGUAGES
    ]
    assert unrunnable == [], f"runnable languages: {sorted(LANGUAGES)}"


def test_every_skip_gives_its_reason_and_every_option_is_known():
    assert [block.id for block in SKIPPED if not block.reason] == []
    unknown = [
        f"{block.id}: {key}" for block in BLOCKS for key in block.options if key not in ("expect", "timeout")
    ]
    assert unknown == []


@pytest.mark.parametrize("block", SKIPPED, ids=[block.id for block in SKIPPED])
def test_skipped_block(block: Block):
    pytest.skip(f"{block.id}: {block.reason}")

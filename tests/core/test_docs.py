"""README.md is a front door of at most 12,000 bytes; every relative link in the docs resolves, anchor included;
every docs/ page is reachable from the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, ROOT / "CONTRIBUTING.md", ROOT / "ARCHITECTURE.md", *PAGES]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The file's text without its fenced code blocks (a `# comment` there is not a heading)."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but hyphens and spaces dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(heading) for heading in re.findall(r"^#{1,6} (.+)$", prose(path), re.M)}


def relative_links(path: Path) -> list[str]:
    return [link for link in LINK.findall(prose(path)) if not re.match(r"[a-z]+:", link)]


def test_the_readme_is_at_most_12000_bytes():
    assert len(README.read_bytes()) <= 12_000


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_anchor_included(document: Path):
    for link in relative_links(document):
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        assert path.exists(), f"{link}: no such file"
        if anchor:
            assert anchor in anchors(path), f"{link}: no heading in {path.name} has that anchor"


def test_every_page_is_linked_from_the_readme_or_the_index():
    def linked_from(document: Path) -> set[Path]:
        return {(document.parent / link.partition("#")[0]).resolve() for link in relative_links(document)}

    index = ROOT / "docs" / "index.md"
    assert index in linked_from(README)
    reachable = linked_from(README) | linked_from(index)
    assert [page.name for page in PAGES if page != index and page not in reachable] == []

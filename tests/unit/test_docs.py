"""The docs hold together: a short README that links every page of docs/, and no relative link (in the README or
a page) that points at nothing: the link checker CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
README_MAX_BYTES = 10 * 1024


def _relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_the_readme_is_short_and_gives_the_two_commands_first() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= README_MAX_BYTES
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "./scripts/demo" in first_block and "./scripts/test" in first_block


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.split("#")[0]).resolve() for t in _relative_links(ROOT / "README.md")}
    pages = set((ROOT / "docs").glob("*.md"))
    assert pages and {p.resolve() for p in pages} <= linked, sorted(str(p) for p in pages if p.resolve() not in linked)


def test_no_relative_link_is_broken() -> None:
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in _relative_links(page):
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []

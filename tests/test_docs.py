"""The documentation holds together: every relative link of the README and of docs/ reaches
a file of the repository (and, with a #fragment, a heading of that file), and every
registered study has its page docs/<study>.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.studies import STUDIES

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """The fragments GitHub gives the Markdown headings of ``path``: lower case, punctuation
    dropped (but - and _), spaces to hyphens, -1, -2, ... on repeats."""
    seen: dict[str, int] = {}
    slugs = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            repeats = seen.get(slug, 0)
            slugs.add(slug if repeats == 0 else f"{slug}-{repeats}")
            seen[slug] = repeats + 1
    return slugs


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto:


def test_the_docs_exist():
    assert (DOCS / "index.md").is_file()
    assert len(PAGES) > 5


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists() or REPO not in (destination, *destination.parents):
            broken.append(f"{target}: no such file in the repository")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no heading #{fragment} in {destination.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_has_its_page(study):
    page = DOCS / f"{study}.md"
    assert page.is_file(), f"docs/{study}.md is missing: every study in pipeline.studies.STUDIES has a page"
    assert f"({study}.md)" in (DOCS / "index.md").read_text(), f"docs/index.md does not link {study}.md"


def test_the_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    unlinked = [page.name for page in DOCS.glob("*.md") if f"(docs/{page.name}" not in readme]
    assert not unlinked, f"README.md links no docs/{', docs/'.join(unlinked)}"

"""The README's and docs/' relative links: each names a file that exists and, where it names a section, a heading
that the file has (as GitHub makes a heading's anchor). Results files get renamed when a model is replaced; a link
left pointing at the old name fails here instead of on a reader."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    return {anchor(h) for h in re.findall(r"^#+ (.*)$", markdown.read_text(encoding="utf-8"), flags=re.M)}


def test_anchor_follows_githubs_rule():
    assert anchor("Teal at 4 %, built again: the demo (measured 2026-12-05, late)") == \
        "teal-at-4--built-again-the-demo-measured-2026-12-05-late"


def test_every_relative_link_resolves():
    broken = []
    for markdown in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)\s]+)\)", markdown.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", link):
                continue  # https:, mailto:
            target, _, section = link.partition("#")
            path = markdown.parent / target if target else markdown
            if not path.exists():
                broken.append(f"{markdown.relative_to(ROOT)}: {link} (no such file)")
            elif section and path.suffix == ".md" and section not in anchors(path):
                broken.append(f"{markdown.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, "\n".join(broken)

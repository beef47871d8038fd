"""A small generated corpus for the migration tests: many short paragraphs on distinct topics."""

from __future__ import annotations

from pathlib import Path

TOPICS = [
    "tomatoes",
    "roses",
    "sourdough",
    "espresso",
    "bicycles",
    "glaciers",
    "violins",
    "volcanoes",
    "penguins",
    "lighthouses",
    "chess openings",
    "tax returns",
    "kubernetes pods",
    "postgres vacuum",
    "solar panels",
    "beekeeping",
    "knitting",
    "marathon training",
    "jazz chords",
    "origami",
]
ASPECTS = [
    "history of",
    "how to care for",
    "common mistakes with",
    "the physics behind",
    "buying guide for",
    "safety rules around",
    "the economics of",
    "a beginner's take on",
    "tools needed for",
    "seasonal advice on",
]


def write_corpus(
    folder: Path, docs: int, paragraphs: int, *, prefix: str = "doc", long: bool = False
) -> Path:
    """``docs`` Markdown files, each a heading and ``paragraphs`` distinct paragraphs.

    ``long`` paragraphs (about 200 tokens each) are too big for the chunker to pack two
    into one chunk, so each paragraph is one chunk: tests that count chunks per paragraph
    use them."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        topic = TOPICS[d % len(TOPICS)]
        lines = [f"# {topic.title()} notes {prefix}{d}", ""]
        for p in range(paragraphs):
            aspect = ASPECTS[p % len(ASPECTS)]
            filler = "".join(f" {aspect} {topic}, remark {k}." for k in range(14)) if long else ""
            lines += [
                f"Paragraph {p} of {prefix}{d}: {aspect} {topic}, with detail number "
                f"{d * 100 + p} that nobody else repeats.{filler}",
                "",
            ]
        (folder / f"{prefix}{d:03d}.md").write_text("\n".join(lines))
    return folder

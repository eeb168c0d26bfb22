"""Assistant markdown to safe HTML: raw HTML off, dangerous link schemes refused."""

from __future__ import annotations

from markdown_it import MarkdownIt

_SAFE_SCHEMES = ("http:", "https:", "mailto:")

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_md.enable("table")
_md.enable("strikethrough")


def _validate_link(url: str) -> bool:
    """Allow relative links and a short list of schemes; refuse javascript:, data:, vbscript:…"""
    candidate = url.strip().lower()
    if ":" not in candidate.split("/", 1)[0]:
        return True
    return candidate.startswith(_SAFE_SCHEMES)


_md.validateLink = _validate_link  # type: ignore[method-assign]


def render_markdown(text: str) -> str:
    """Render once per reply; clients insert this string and nothing else as HTML."""
    html: str = _md.render(text)
    return html

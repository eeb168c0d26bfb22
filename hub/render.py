"""Assistant markdown to safe HTML: raw HTML off, dangerous link schemes refused, no images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token

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


def _image_as_link(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: Any
) -> str:
    """An image would load for every viewer (leaking chat text in its URL): show a link instead."""
    token = tokens[idx]
    src = escapeHtml(str(token.attrGet("src") or ""))
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    label = escapeHtml(alt) or src
    return f'<a href="{src}" rel="nofollow noopener noreferrer">{label}</a>'


_md.add_render_rule("image", _image_as_link)


def render_markdown(text: str) -> str:
    """Render once per reply; clients insert this string and nothing else as HTML."""
    html: str = _md.render(text)
    return html

"""Listing bodies in Swift's three formats: plain (names), JSON and XML."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from xml.sax.saxutils import escape, quoteattr

from common.listingdb.listing import Subdir

__all__ = ["render_json", "render_plain", "render_xml"]

R = TypeVar("R")
# A row as an ordered mapping of Swift's field names, "name" first.
Fields = Callable[[R], dict[str, Any]]


def render_plain(items: Sequence[R | Subdir], fields: Fields[R]) -> bytes:
    names = [i.name if isinstance(i, Subdir) else str(fields(i)["name"]) for i in items]
    return "".join(n + "\n" for n in names).encode()


def render_json(items: Sequence[R | Subdir], fields: Fields[R]) -> bytes:
    out = [{"subdir": i.name} if isinstance(i, Subdir) else fields(i) for i in items]
    return json.dumps(out, ensure_ascii=True, separators=(",", ":")).encode()


def _xml_value(value: Any) -> str:
    return escape(str(value))


def render_xml(
    root: str, root_name: str, row_tag: str, items: Sequence[R | Subdir], fields: Fields[R]
) -> bytes:
    """`root` is "container" or "account"; `row_tag` is "object" or "container"."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n', f"<{root} name={quoteattr(root_name)}>"]
    for item in items:
        if isinstance(item, Subdir):
            parts.append(
                f"<subdir name={quoteattr(item.name)}><name>{_xml_value(item.name)}</name></subdir>"
            )
            continue
        inner = "".join(f"<{k}>{_xml_value(v)}</{k}>" for k, v in fields(item).items())
        parts.append(f"<{row_tag}>{inner}</{row_tag}>")
    parts.append(f"</{root}>")
    return "".join(parts).encode()

"""Self-contained HTML pages, for `ptflow report` and the sweep report.

Inline style and PNGs as base64 data URIs: no external resource, so one file can be mailed,
attached to an issue or archived on its own.
"""

from __future__ import annotations

import base64
import html

from ptflow.reports.tables import is_number

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0; display: block; max-width: 100%; overflow-x: auto;
        font-size: .92em; }
th, td { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left; }
th, td.n { white-space: nowrap; vertical-align: bottom; }  /* a wide table scrolls; a number never breaks */
td:first-child { white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; white-space: pre-wrap; }
h2 { margin-top: 1.8em; border-bottom: 2px solid #eee; }
.muted { color: #777; }
"""

escape = html.escape


def page(title: str, sections: list[str], footer: str = "") -> str:
    body = "\n".join(sections)
    closing = f"<p class=muted>{escape(footer)}</p>" if footer else ""
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n{closing}</body></html>\n")


def section(title: str, content: str) -> str:
    return f"<h2>{escape(title)}</h2>\n{content}\n"


def table(rows: list[list[str]], headers: list[str] | None = None) -> str:
    """Cells are text. Under headers, a column of numbers is right-aligned, header included; a
    key-value list (no headers) is left-aligned throughout, as its values are of every kind."""
    numeric = [bool(headers) and _numeric([row[i] for row in rows if i < len(row)])
               for i in range(max(len(headers or []), *(len(row) for row in rows), 0))]
    head = "<tr>" + "".join(_cell("th", h, n) for h, n in zip(headers, numeric)) + "</tr>" if headers else ""
    body = "".join("<tr>" + "".join(_cell("td", c, n) for c, n in zip(row, numeric)) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _numeric(column: list[str]) -> bool:
    values = [c for c in column if c not in ("", "-")]
    return bool(values) and all(is_number(c.replace(",", "")) for c in values)


def _cell(tag: str, text: str, numeric: bool) -> str:
    return f"<{tag} class=n>{escape(text)}</{tag}>" if numeric else f"<{tag}>{escape(text)}</{tag}>"


def image(png: bytes, alt: str) -> str:
    return f'<p><img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>'

"""Sections of blocks -> one self-contained HTML file, and -> Markdown.

The HTML has inline CSS and inline SVG only: no script, no font, no image, no
external reference, and a Content-Security-Policy that forbids fetching anything,
so a hostile document in the corpus can neither run nor phone home. Every piece of
text is escaped."""
from __future__ import annotations

import re
from html import escape

from curation.report.document import Diff, Excerpt, P, Plot, Section, Sub, Table

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa;line-height:1.45}
header{background:#263238;color:#fff;padding:16px 24px}
header h1{margin:0 0 8px;font-size:22px}
header p.headline{margin:0 0 10px;font-size:15px;color:#eceff1;max-width:1100px}
nav a{color:#cfd8dc;margin-right:14px;text-decoration:none;font-size:14px}
main{max-width:1100px;margin:0 auto;padding:8px 24px 48px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;margin:18px 0;padding:8px 20px 16px}
h2{font-size:19px;border-bottom:1px solid #eee;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
p.note{color:#666;font-size:13px}
p.warn{border-left:4px solid #d62728;background:#fdecea;padding:6px 10px;font-weight:600}
.table{overflow:auto;max-height:75vh;margin:8px 0}
table{border-collapse:separate;border-spacing:0;font-size:13px}
th,td{border-right:1px solid #e0e0e0;border-bottom:1px solid #e0e0e0;padding:3px 8px;vertical-align:top}
tr>:first-child{border-left:1px solid #e0e0e0}
thead th{border-top:1px solid #e0e0e0;position:sticky;top:0;z-index:1}
th{background:#f5f5f5;text-align:left}
td.n{text-align:right;white-space:nowrap}
svg.plot{display:block;max-width:100%;height:auto;margin:10px 0}
.excerpt{margin:8px 0;border-left:3px solid #90a4ae;padding:4px 10px;background:#f7f9fa}
.excerpt .title{font-weight:600;font-size:13px}
.excerpt pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font-size:12.5px;max-height:14em;overflow:auto}
.excerpt .meta{color:#666;font-size:12px}
.diff{margin:10px 0}
.diff .cols{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.diff .col{border:1px solid #e0e0e0;padding:6px 8px;font-size:12.5px;word-break:break-word;background:#fcfcfc}
.diff .col h4{margin:0 0 4px;font-size:12.5px}
.diff del{background:#ffd7d5;text-decoration:line-through}
.diff ins{background:#ccf2d1;text-decoration:none}
"""

# fetching anything at all is refused: the report is one file
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(s: str) -> str:
    return escape(str(s), quote=True)


def _html_block(b) -> str:
    if isinstance(b, P):
        cls = "warn" if b.warn else "note" if b.note else ""
        return f'<p class="{cls}">{_e(b.text)}</p>' if cls else f"<p>{_e(b.text)}</p>"
    if isinstance(b, Sub):
        return f"<h3>{_e(b.title)}</h3>"
    if isinstance(b, Table):
        head = "".join(f"<th>{_e(h)}</th>" for h in b.headers)
        body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" if i < b.text_cols else f'<td class="n">{_e(c)}</td>'
                                        for i, c in enumerate(row)) + "</tr>" for row in b.rows)
        return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if isinstance(b, Plot):
        return b.svg
    if isinstance(b, Excerpt):
        meta = f'<div class="meta">{_e(b.meta)}</div>' if b.meta else ""
        return (f'<div class="excerpt"><div class="title">{_e(b.title)}</div>'
                f"<pre>{_e(b.text)}</pre>{meta}</div>")
    if isinstance(b, Diff):
        def col(title, segs, tag):
            parts = [_e(t) if op == "=" else f"<{tag}>{_e(t)}</{tag}>" for op, t in segs]
            return f'<div class="col"><h4>{_e(title)}</h4>{" ".join(parts)}</div>'
        return (f'<div class="diff"><h4>{_e(b.title)}</h4><div class="cols">'
                f'{col(b.left_title, b.left, "del")}{col(b.right_title, b.right, "ins")}</div>'
                f'<p class="note">{_e(b.caption)}</p></div>')
    raise TypeError(f"unknown block {type(b).__name__}")


def to_html(title: str, sections: list[Section], headline: str = "") -> str:
    nav = "".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{_e(s.id)}"><h2>{_e(s.title)}</h2>'
                   + "".join(_html_block(b) for b in s.blocks) + "</section>" for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1>"
            + (f'<p class="headline" id="headline">{_e(headline)}</p>' if headline else "")
            + f"<nav>{nav}</nav></header><main>{body}</main></body></html>\n")


# ------------------------------------------------------------------ Markdown

_MD_SPECIAL = re.compile(r"([\\`*\[\]|#])")


def md_escape(s: str) -> str:
    """Text as literal Markdown: &, < and > as entities (no raw HTML can start), other
    markup characters backslash-escaped, lines joined."""
    s = str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s).replace("\r", " ").replace("\n", " ")


def _md_block(b) -> str:
    if isinstance(b, P):
        if b.warn:
            return f"**{md_escape(b.text)}**"
        return f"*{md_escape(b.text)}*" if b.note else md_escape(b.text)
    if isinstance(b, Sub):
        return f"### {md_escape(b.title)}"
    if isinstance(b, Table):
        align = ["---" if i < b.text_cols else "---:" for i in range(len(b.headers))]
        lines = ["| " + " | ".join(md_escape(h) for h in b.headers) + " |",
                 "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in b.rows]
        return "\n".join(lines)
    if isinstance(b, Plot):
        return f"*Plot in report.html: {md_escape(b.title)}.*"
    if isinstance(b, Excerpt):
        out = f"**{md_escape(b.title)}**\n\n> {md_escape(b.text)}"
        return out + (f"\n\n*{md_escape(b.meta)}*" if b.meta else "")
    if isinstance(b, Diff):
        def side(segs):
            return " ".join(md_escape(t) if op == "=" else f"**{md_escape(t)}**" for op, t in segs)
        return (f"**{md_escape(b.title)}** ({md_escape(b.caption)}; words that differ in bold)\n\n"
                f"- {md_escape(b.left_title)}: {side(b.left)}\n- {md_escape(b.right_title)}: {side(b.right)}")
    raise TypeError(f"unknown block {type(b).__name__}")


def to_markdown(title: str, sections: list[Section], headline: str = "") -> str:
    parts = [f"# {md_escape(title)}"] + ([f"**{md_escape(headline)}**"] if headline else [])
    for s in sections:
        parts.append(f"## {md_escape(s.title)}")
        parts.extend(_md_block(b) for b in s.blocks)
    return "\n\n".join(parts) + "\n"

"""One self-contained HTML page: every figure inlined as a base64 PNG, no script, no external reference, so it
opens offline, from an e-mail, or years later."""

import base64
import html
import pathlib
from collections.abc import Sequence

from jaxcxr.fsutil import atomic_write_text
from jaxcxr.report.tables import Table

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 420px; }
img { max-width: 100%; }
.note { color: #8a4b00; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def escape(text: object) -> str:
  return html.escape(str(text))


def image(png: bytes, alt: str, caption: str = "", width: int | None = None) -> str:
  """A figure with its PNG inlined as a data URI."""
  source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
  size = f' width="{width}"' if width else ""
  return (f'<figure><img src="{source}" alt="{escape(alt)}"{size}>'
          + (f"<figcaption>{escape(caption)}</figcaption>" if caption else "") + "</figure>")


def table(cells: Table) -> str:
  head = "".join(f"<th>{escape(h)}</th>" for h in cells.header)
  body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in cells.rows)
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def paragraph(text: str, note: bool = False) -> str:
  return f'<p{" class=note" if note else ""}>{escape(text)}</p>'


def preformatted(text: str) -> str:
  return f"<pre>{escape(text)}</pre>"


def folded(label: str, content: str) -> str:
  """Content a reader opens when wanted (long listings): HTML's own details element, no script."""
  return f"<details><summary>{escape(label)}</summary>{content}</details>"


def page(title: str, sections: Sequence[tuple[str, Sequence[str]]]) -> str:
  """The whole document: a title, then each (heading, parts) section; parts are this module's HTML pieces."""
  body = "".join(f"<h2>{escape(heading)}</h2>" + "".join(parts) for heading, parts in sections)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
          f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n")


def write(path: str | pathlib.Path, document: str) -> None:
  atomic_write_text(path, document)

"""Turn the reST-flavoured bits of our docstrings into Markdown the site can render.

The package's docstrings are Google style with a few reST habits: ``double backticks``,
Sphinx roles (``:func:`x```, ``:class:`~a.b.C```) and ``.. math::`` blocks. mkdocstrings renders
docstrings as Markdown, so this module rewrites those habits:

* ``.. math:: formula`` (and its indented continuation lines) becomes a ``$$ ... $$`` block,
  rendered by MathJax through ``pymdownx.arithmatex``;
* ``:math:`x``` becomes ``$x$``;
* ``:func:`a.b``` and friends become the code span `a.b` (``~a.b`` keeps only the last part);
* ``double backticks`` become single backticks;
* section titles underlined with ``-----`` become bold paragraphs;
* in an ``Args:`` section, ``a, b: text`` becomes one entry per name.

Used in two places: the griffe extension below (for the API reference pages, configured in
``mkdocs.yml``) and ``docs/tools/gen_pages.py`` (for the rule catalogue).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|ref|const):`([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_DOUBLE_TICKS = re.compile(r"``([^`]+?)``")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. math::\s*(?P<first>.*)$")
_UNDERLINE = re.compile(r"^\s*(-{3,}|={3,}|~{3,})\s*$")
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params):\s*$")
_SHARED_PARAMS = re.compile(r"^(\s+)([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)+):\s+(\S.*)$")


def _role(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    if target.startswith("~"):
        target = target[1:].rpartition(".")[2]
    return f"`{target}`"


def _math_blocks(text: str) -> str:
    """Replace each ``.. math::`` directive (and its indented body) with a ``$$`` block."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        found = _MATH_DIRECTIVE.match(lines[i])
        if not found:
            out.append(lines[i])
            i += 1
            continue
        indent = len(found.group("indent"))
        body = [found.group("first")] if found.group("first").strip() else []
        i += 1
        # the body: the directive's own line, then lines indented deeper, up to a blank line
        while i < len(lines) and lines[i].strip():
            if len(lines[i]) - len(lines[i].lstrip()) <= indent:
                break
            body.append(lines[i])
            i += 1
        formula = "\n".join(b.strip() for b in body if b.strip())
        pad = " " * indent
        if out and out[-1].strip():
            out.append("")
        out.extend([f"{pad}$$", *(pad + ln for ln in formula.splitlines()), f"{pad}$$", ""])
    return "\n".join(out)


def _section_titles(text: str) -> str:
    """reST section titles (a line underlined with ``---``) become bold paragraphs: as
    Markdown they would be headings that clash with the page's own."""
    lines = text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        title = out[-1].strip() if out else ""
        if _UNDERLINE.match(line) and title and (i < 2 or not lines[i - 2].strip()):
            out[-1] = f"**{title}**"
            out.append("")
            continue
        out.append(line)
    return "\n".join(out)


def _split_shared_params(text: str) -> str:
    """In an ``Args:`` section, ``hs, ws: description`` documents two parameters at once;
    the Google-style parser would take ``hs, ws`` for one name. Write one line per name
    (only for one-line descriptions, so no continuation line is misattributed)."""
    lines = text.splitlines()
    out: list[str] = []
    section_indent: int | None = None
    for i, line in enumerate(lines):
        header = _SECTION.match(line)
        if header:
            section_indent = len(header.group(1))
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip())
        if section_indent is not None and line.strip() and indent <= section_indent:
            section_indent = None
        shared = _SHARED_PARAMS.match(line) if section_indent is not None else None
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        continued = nxt.strip() and len(nxt) - len(nxt.lstrip()) > indent
        if shared and not continued:
            pad, names, desc = shared.groups()
            out += [f"{pad}{name.strip()}: {desc}" for name in names.split(",")]
        else:
            out.append(line)
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """Markdown for a docstring written with the reST habits listed in the module docstring."""
    text = _section_titles(text)
    text = _split_shared_params(text)
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    text = _ROLE.sub(_role, text)
    text = _DOUBLE_TICKS.sub(lambda m: f"`{m.group(1)}`", text)
    return text


class RstToMarkdown(griffe.Extension):
    """Griffe extension: rewrite every docstring of a package with :func:`rst_to_markdown`."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)

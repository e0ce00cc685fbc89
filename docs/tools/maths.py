"""Typeset the site's formulas when the site is built: TeX in, MathML out, no JavaScript.

The pages write maths in TeX (``$...$`` and ``$$...$$``); ``pymdownx.arithmatex`` in generic
mode wraps each formula in ``<span class="arithmatex">\\(...\\)</span>`` (inline) or
``<div class="arithmatex">\\[...\\]</div>`` (display). :func:`typeset` replaces the TeX inside
those wrappers with MathML, converted by the ``latex2mathml`` package, which browsers render
natively (MathML Core: Chromium 109+, Firefox, Safari). The site therefore shows its maths
offline, with no script and nothing fetched from a CDN; the TeX source stays in the page as
the formula's ``alttext`` (read by screen readers, and shown by a browser without MathML).

A formula ``latex2mathml`` cannot convert (a syntax error, a command or an environment it does
not know) fails the build, naming the formula and the page.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_WRAPPED = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">(?P<body>.*?)</(?P=tag)>', re.DOTALL
)
_LEFT_OVER = re.compile(r"<m[ino]>([^<]*(?:\\|&(?![#\w]+;))[^<]*)</m[ino]>")
_NAMED_OPERATOR = re.compile(r"<mo>([A-Za-z]{2,})</mo>")
_DELIMITERS = {"\\(": "\\)", "\\[": "\\]", "$$": "$$", "$": "$"}


class MathsError(ValueError):
    """A formula that cannot be typeset."""


def tex_to_mathml(tex: str, display: bool = False) -> str:
    """One TeX formula (without delimiters) as a ``<math>`` element."""
    try:
        mathml = convert(tex, display="block" if display else "inline")
    except Exception as err:  # noqa: BLE001 - the converter raises many kinds; report the formula
        raise MathsError(f"cannot typeset {tex!r}: {type(err).__name__} {err}") from err
    if "<merror" in mathml:
        raise MathsError(f"cannot typeset {tex!r}: {mathml}")
    unknown = _LEFT_OVER.search(mathml)
    if unknown:  # the converter passes what it does not know through as text
        raise MathsError(f"cannot typeset {tex!r}: {unknown.group(1)!r} is not supported")
    # \operatorname{pad} comes out as the operator <mo>pad</mo>, which browsers space like a
    # "+"; as an identifier it sits next to its argument, as in TeX: pad(W), not pad (W).
    mathml = _NAMED_OPERATOR.sub(r"<mi>\1</mi>", mathml)
    alt = html.escape(" ".join(tex.split()), quote=True)
    return mathml.replace("<math ", f'<math alttext="{alt}" ', 1)


def _strip_delimiters(tex: str) -> str:
    tex = tex.strip()
    for opening, closing in _DELIMITERS.items():
        if tex.startswith(opening) and tex.endswith(closing) and len(tex) >= 2 * len(opening):
            return tex[len(opening) : len(tex) - len(closing)].strip()
    return tex


def typeset(page_html: str, where: str = "") -> str:
    """``page_html`` with every arithmatex formula replaced by its MathML rendering."""

    def one(found: re.Match[str]) -> str:
        tag = found.group("tag")
        tex = _strip_delimiters(html.unescape(found.group("body")))
        try:
            mathml = tex_to_mathml(tex, display=tag == "div")
        except MathsError as err:
            raise MathsError(f"{where}: {err}" if where else str(err)) from None
        return f'<{tag} class="arithmatex">{mathml}</{tag}>'

    return _WRAPPED.sub(one, page_html)

"""The formulas are typeset at build time (``docs/tools/maths.py``): TeX in, MathML out."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("latex2mathml", reason="latex2mathml (docs extra) is not installed")

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("docs_maths", ROOT / "docs" / "tools" / "maths.py")
maths = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(maths)


def test_inline_and_display_formulas_become_mathml() -> None:
    page = (
        '<p>with <span class="arithmatex">\\(s\\,(W * x + b) &lt; t\\)</span> and</p>\n'
        '<div class="arithmatex">\\[\\sum_t \\operatorname{pad}(W_t)\\]</div>'
    )
    out = maths.typeset(page)
    assert "\\(" not in out and "\\[" not in out
    inline, display = re.findall(r"<math [^>]*>", out)
    assert 'display="inline"' in inline and 'display="block"' in display
    assert 'alttext="s\\,(W * x + b) &lt; t"' in inline  # the TeX, escaped, for fallbacks
    assert "<mo>&#x0003C;</mo>" in out  # the escaped "<" of the page is the operator <
    assert "<mi>pad</mi>" in out and "&#x02211;" in out  # \operatorname, \sum
    assert out.startswith("<p>with ") and out.count('class="arithmatex"') == 2


def test_text_without_maths_is_unchanged() -> None:
    page = '<p>no maths here, only <code>$x$</code> in code</p><span class="other">\\(x\\)</span>'
    assert maths.typeset(page) == page


@pytest.mark.parametrize(
    "tex", ["\\frac{a}{", "x^", "\\foo{x}", "\\begin{aligned} a &= b \\end{aligned}"]
)
def test_formulas_it_cannot_typeset_fail_loudly(tex: str) -> None:
    page = f'<span class="arithmatex">\\({tex}\\)</span>'
    with pytest.raises(maths.MathsError, match="page.md: cannot typeset"):
        maths.typeset(page, where="page.md")

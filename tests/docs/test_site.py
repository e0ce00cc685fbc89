"""The documentation site builds with ``mkdocs build --strict`` (warnings are errors).

Skipped when the docs toolchain is not installed (``pip install -e ".[docs]"``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("mkdocs")
pytest.importorskip("material", reason="mkdocs-material is not installed")
pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]) -> Path:
    out = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    cmd += ["--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-6000:]}"
    return out


def _page(site: Path, path: str) -> str:
    return (site / path / "index.html").read_text(encoding="utf-8")


def test_site_builds_strict(site: Path) -> None:
    for page in ("", "concepts/merge-algebra", "tutorials/custom-rule", "reference/api/reparam"):
        assert (site / page / "index.html").is_file(), page


def test_rule_catalogue_lists_every_rule(site: Path) -> None:
    import reparam

    html = _page(site, "reference/rules")
    for rule in reparam.list_rules():
        assert f'id="{rule.name}"' in html, rule.name


def test_zoo_table_lists_every_model(site: Path) -> None:
    import reparam_models

    html = _page(site, "reference/zoo")
    for name in reparam_models.list_models():
        assert f"<code>{name}</code>" in html, name


def test_tutorial_code_is_included(site: Path) -> None:
    html = _page(site, "tutorials/custom-rule")
    assert "FoldConstantScale" in html and "--8&lt;--" not in html


def test_api_reference_renders(site: Path) -> None:
    html = _page(site, "reference/api/reparam")
    for name in ("deploy_with_report", "RuleContext", "assert_equivalent", "DeployReport"):
        assert name in html, name


def test_site_needs_no_network(site: Path) -> None:
    """No page loads a script, a stylesheet or a font from another host, and every formula is
    finished MathML (typeset at build time), not TeX waiting for a script."""
    external = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//")
    wrapped = re.compile(r'class="arithmatex">(?!<math )')
    maths = 0
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        where = page.relative_to(site)
        assert not external.search(html), f"{where}: {external.search(html).group(0)}"
        assert not wrapped.search(html), f"{where}: a formula was left as TeX"
        maths += html.count("<math ")
    assert maths >= 50  # the concept pages and the rule catalogue are full of formulas
    assert "<math " in _page(site, "concepts/merge-algebra")


def test_cli_reference_shows_the_shared_epilog_once(site: Path) -> None:
    from reparam.cli import build_parser

    epilog = build_parser().epilog
    if not epilog:
        pytest.skip("the parser has no epilog")
    opening = " ".join(epilog.split()[:4])  # e.g. "MODEL is a zoo"
    text = " ".join(re.sub(r"<[^>]+>", " ", _page(site, "reference/cli")).split())
    assert text.count(opening) == 1, f"{opening!r} appears {text.count(opening)} times"

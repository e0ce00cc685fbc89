"""Every tutorial runs when its Python blocks are pasted in page order into a fresh interpreter.

A reader copies the blocks of a page top to bottom; that program has to run. For each page
under ``docs/tutorials/`` (and the home page) the test assembles that program: the
```` ```python ```` blocks in page order, each ``--8<-- "file:section"`` line replaced by the
section it includes, exactly as ``pymdownx.snippets`` does when the site is built.

* When the program is the whole of one script in ``docs/examples/`` (same statements, in the
  same order: compared as syntax trees, so comments and blank lines do not matter), it is the
  script that ``test_examples.py`` runs, and nothing is run twice.
* Otherwise the program is run here, in a fresh interpreter.

The concept pages are not checked: their code lines are fragments that name the API inside
the text, not programs.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = [DOCS / "index.md", *sorted((DOCS / "tutorials").glob("*.md"))]
TIMEOUT_S = 180

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*\{?\s*\.?(?P<lang>[\w+-]*)")
_SNIPPET = re.compile(r'^\s*-{1,}8<-{1,}\s+"(?P<target>[^"]+)"\s*$')


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```` ```python ```` fences of a page, in order."""
    blocks: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening.group("fence"), opening.group("lang").lower()
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if lang in ("python", "py", "python3"):
            blocks.append("\n".join(body))
    return blocks


def section(path: Path, name: str) -> str:
    """The lines between ``--8<-- [start:name]`` and ``--8<-- [end:name]`` of a file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = f"--8<-- [start:{name}]"
    end = f"--8<-- [end:{name}]"
    try:
        first = next(i for i, line in enumerate(lines) if line.strip().endswith(start))
        last = next(i for i, line in enumerate(lines) if line.strip().endswith(end))
    except StopIteration:
        raise AssertionError(f"{path.name} has no section {name!r}") from None
    return "\n".join(lines[first + 1 : last])


def expand(block: str) -> tuple[str, set[Path]]:
    """A code block with its snippet lines replaced by what they include, and the files used."""
    out: list[str] = []
    used: set[Path] = set()
    for line in block.splitlines():
        found = _SNIPPET.match(line)
        if not found:
            out.append(line)
            continue
        target = found.group("target")
        file, _, name = target.partition(":")
        path = ROOT / file
        assert path.is_file(), f"snippet {target!r}: no such file"
        used.add(path)
        out.append(section(path, name) if name else path.read_text(encoding="utf-8"))
    return "\n".join(out), used


def page_program(page: Path) -> tuple[str, set[Path]]:
    """What a reader gets by pasting the page's Python blocks in order, and the files used."""
    parts: list[str] = []
    used: set[Path] = set()
    for block in python_blocks(page.read_text(encoding="utf-8")):
        code, files = expand(block)
        parts.append(code)
        used |= files
    return "\n\n".join(parts) + "\n", used


def _statements(source: str) -> str:
    """The program as a syntax tree without its module docstring (comments are not in it)."""
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return ast.dump(ast.Module(body=body, type_ignores=[]))


def test_pages_found() -> None:
    names = {p.name for p in PAGES}
    assert {"index.md", "custom-rule.md", "deploy-any-model.md"} <= names


def test_block_extraction() -> None:
    page = (
        "# t\n\n```python\nimport os\n```\n\ntext\n\n```text\nout\n```\n\n"
        "```py\nx = 1\n```\n\n```{.text .wrap}\nlong\n```\n\n```{.python .x}\ny = 2\n```\n"
    )
    assert python_blocks(page) == ["import os", "x = 1", "y = 2"]


# Pages whose Python reads what a shell block above it writes: the reason, and the test that
# checks the same thing end to end.
AFTER_SHELL = {
    "train.md": "its Python block opens the checkpoint the torchrun command above writes; "
    "tests/train/test_train_run.py loads that file strictly into the inference model",
}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_blocks_run_in_order(
    page: Path, tmp_path: Path, child_env: dict[str, str]
) -> None:
    program, used = page_program(page)
    if not program.strip():
        pytest.skip(f"{page.name} has no Python blocks")
    if page.name in AFTER_SHELL:
        pytest.skip(AFTER_SHELL[page.name])
    try:
        tree = _statements(program)
    except SyntaxError as err:
        pytest.fail(f"{page.name}: the pasted blocks are not valid Python: {err}")
    if len(used) == 1:
        (script,) = used
        if script.parent == EXAMPLES and tree == _statements(script.read_text("utf-8")):
            return  # the page is that whole script, in order: test_examples.py runs it
    path = tmp_path / f"{page.stem}_pasted.py"
    path.write_text(program, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"{page.relative_to(ROOT)}: the Python blocks pasted in page order fail "
        f"(the program is {path}):\n{proc.stderr[-3000:]}"
    )

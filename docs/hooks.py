"""MkDocs hooks: the pages generated from the code, and the maths typeset at build time.

* The rule catalogue, the model zoo table and the command-line reference are computed on every
  build by ``docs/tools/gen_pages.py`` (no cache, nothing checked in), so they always describe
  the code being documented.
* Every formula is turned from TeX into MathML by ``docs/tools/maths.py``, so the pages show
  their maths without JavaScript and without a network connection.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))

from gen_pages import generated_pages  # noqa: E402
from maths import MathsError, typeset  # noqa: E402


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path, text in generated_pages().items():
        files.append(File.generated(config, path, content=text))
    return files


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    try:
        return typeset(html, where=page.file.src_uri)
    except MathsError as err:
        raise PluginError(str(err)) from err

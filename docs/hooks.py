"""MkDocs hook: add the pages that are generated from the code at build time.

The rule catalogue, the model zoo table and the command-line reference are computed on every
build by ``docs/tools/gen_pages.py`` (no cache, nothing checked in), so they always describe
the code being documented.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))

from gen_pages import generated_pages  # noqa: E402


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path, text in generated_pages().items():
        files.append(File.generated(config, path, content=text))
    return files

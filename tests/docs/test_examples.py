"""Every script in docs/examples runs to completion.

The tutorials include their code from these scripts, so this is what keeps the code on the
site working. The scripts start together (one process each, single-threaded) and each test
waits for its own, so the whole module takes about as long as the slowest script on a busy
machine rather than the sum of all of them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
TIMEOUT_S = 180  # generous: each script takes a few seconds on an idle 2-core machine


@pytest.fixture(scope="module")
def launched(
    request: pytest.FixtureRequest, child_env: dict[str, str]
) -> Iterator[dict[str, tuple[subprocess.Popen, float]]]:
    """Start every selected example at once; the tests collect the results."""
    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if hasattr(item, "callspec") and "script" in item.callspec.params
    }
    procs: dict[str, tuple[subprocess.Popen, float]] = {}
    for name in sorted(selected):
        procs[name] = (
            subprocess.Popen(
                [sys.executable, str(EXAMPLES / name)],
                cwd=ROOT,
                env=child_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            time.perf_counter(),
        )
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_examples_exist() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"quickstart.py", "deploy_any_model.py", "custom_rule.py"} <= names
    pages = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    for script in SCRIPTS:
        assert f"docs/examples/{script.name}" in pages, f"{script.name} is used by no page"


@pytest.mark.parametrize("script", [p.name for p in SCRIPTS])
def test_example_runs(script: str, launched: dict) -> None:
    proc, start = launched[script]
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{script} did not finish in {TIMEOUT_S} s\n{err[-3000:]}")
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, (
        f"{script} exited with {proc.returncode} after {seconds:.1f} s\n"
        f"--- stdout (tail) ---\n{out[-2000:]}\n--- stderr (tail) ---\n{err[-4000:]}"
    )
    assert out.strip(), f"{script} printed nothing"
    if "is not installed" in out:  # e.g. the timm tutorial without timm: say so, do not pass
        pytest.skip(f"{script}: {out.strip().splitlines()[0]}")


def test_example_sections_are_balanced() -> None:
    """Every ``--8<-- [start:x]`` marker has its ``[end:x]`` (snippets would include nothing)."""
    for script in SCRIPTS:
        text = Path(script).read_text()
        starts = set(_markers(text, "start"))
        ends = set(_markers(text, "end"))
        assert starts == ends, f"{script.name}: unbalanced sections {starts ^ ends}"


def _markers(text: str, kind: str) -> list[str]:
    tag = f"# --8<-- [{kind}:"
    return [line.split(tag, 1)[1].rstrip("]") for line in text.splitlines() if tag in line]

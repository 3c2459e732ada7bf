"""The code in docs/testing.md and README.md runs, so the pages cannot rot.

A fenced ``python`` (or ``toml``) block whose first line is ``# <file name>`` is a complete file:
the blocks of one page are written to a scratch directory and pytest runs there, in a separate
process, with the page's own ``pyproject.toml`` (pytest-trio in trio mode). Every other python
block must at least compile.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

REPO: Final = Path(__file__).resolve().parents[2]
# Bound on one page's pytest run (imports dominate; the fault-injection test retries).
RUN_BOUND: Final = 240
_BLOCK: Final = re.compile(r"^```(python|toml)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_FILE_NAME: Final = re.compile(r"# ([\w.-]+\.(?:py|toml))\n")
# Used when a page shows no pyproject.toml of its own: what the testing guide says to write.
_TRIO_MODE: Final = "[tool.pytest.ini_options]\ntrio_mode = true\n"


def blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every python/toml block of ``page``, in order."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(page.read_text())]


def files(page: Path) -> dict[str, str]:
    """The blocks of ``page`` that are whole files, by file name."""
    found: dict[str, str] = {}
    for _, code in blocks(page):
        match = _FILE_NAME.match(code)
        if match:
            assert match.group(1) not in found, f"{page.name}: {match.group(1)} shown twice"
            found[match.group(1)] = code
    return found


def run_page(page: Path, tmp_path: Path) -> str:
    """Write the page's files to ``tmp_path``, run pytest there; its output (asserted green)."""
    written = files(page)
    tests = [name for name in written if name.startswith("test_")]
    assert tests, f"{page.name} has no test file to run"
    written.setdefault("pyproject.toml", _TRIO_MODE)
    for name, code in written.items():
        (tmp_path / name).write_text(code)
    expected = sum(
        isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name.startswith("test_")
        for name in tests
        for node in ast.parse(written[name]).body
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_BOUND,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"{expected} passed" in out, out
    return out


def test_testing_guide_runs(tmp_path: Path) -> None:
    page = REPO / "docs" / "testing.md"
    shown = files(page)
    assert {"pyproject.toml", "echo_app.py"} <= set(shown)
    assert "trio_mode = true" in shown["pyproject.toml"]
    run_page(page, tmp_path)


def test_readme_testing_snippet_runs(tmp_path: Path) -> None:
    run_page(REPO / "README.md", tmp_path)


@pytest.mark.parametrize(
    "page",
    ["README.md", "docs/testing.md", "docs/getting-started.md", "docs/operations.md"],
)
def test_every_python_block_compiles(page: str) -> None:
    for language, code in blocks(REPO / page):
        if language == "python":
            compile(code, f"{page} block", "exec")

"""The docs ship with the project: nothing points outside the repository, every relative link
resolves, and the getting-started page shows exactly the programs that the integration test runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

from actr_trio._logging import LOGGER_NAMES

REPO: Final = Path(__file__).resolve().parents[2]
# What users get: the pages, the package, the examples, the benchmarks, the tests and the build
# files. (Spelled in pieces so this file does not match itself.)
SCANNED: Final = ("README.md", "pyproject.toml", "noxfile.py", "docs", "actr_trio", "examples",
                  "benchmarks", "tests", "protos")  # fmt: skip
SUFFIXES: Final = {".md", ".py", ".pyi", ".toml", ".proto", ".txt", ".rst"}
FORBIDDEN: Final = (
    "../" + "shared",
    "DES" + "IGN §",
    "DES" + "IGN.md",
    "STYLE" + " §",
    "STACK" + "-NOTES",
)
PAGES: Final = sorted(
    [REPO / "README.md", *(REPO / "docs").glob("*.md"), *REPO.glob("*/README.md")]
)
_LINK: Final = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING: Final = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)
_FENCE: Final = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _project_files() -> list[Path]:
    found: list[Path] = []
    for name in SCANNED:
        path = REPO / name
        candidates = [path] if path.is_file() else path.rglob("*")
        found.extend(
            p
            for p in candidates
            if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts
        )
    return found


def test_no_project_file_points_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _project_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if any(text in line for text in FORBIDDEN)
    ]
    assert not offenders, "references to team notes that do not ship:\n" + "\n".join(offenders)


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in _HEADING.findall(_FENCE.sub("", page.read_text()))}


def _links(page: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    for link in _links(page):
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.relative_to(REPO)}: {link} -> missing {path}"
        assert path.is_relative_to(REPO), f"{page.relative_to(REPO)}: {link} leaves the repo"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.relative_to(REPO)}: no heading for {link}"


def test_docs_pages_exist_and_the_readme_links_them() -> None:
    readme_links = set(_links(REPO / "README.md"))
    for name in ("getting-started", "testing", "architecture", "operations"):
        assert (REPO / "docs" / f"{name}.md").is_file()
        assert f"docs/{name}.md" in readme_links


def test_getting_started_shows_the_example_programs_verbatim() -> None:
    page = (REPO / "docs" / "getting-started.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
    for name in ("server.py", "caller.py"):
        program = (REPO / "examples" / "getting_started" / name).read_text()
        assert program in blocks, f"docs/getting-started.md does not show {name} as it is"


def test_getting_started_installs_from_the_clone() -> None:
    page = (REPO / "docs" / "getting-started.md").read_text()
    for command in ("python3 -m venv .venv", "pip install .", "pip install -e '.[codegen]'"):
        assert command in page
    assert "pip install actr-trio" not in page
    assert "pip install 'actr-trio" not in (REPO / "README.md").read_text()


def test_operations_lists_exactly_the_public_logger_names() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    listed = set(re.findall(r"^\| `(actr_trio\.[a-z]+)` \|", text, re.MULTILINE))
    assert listed == set(LOGGER_NAMES)

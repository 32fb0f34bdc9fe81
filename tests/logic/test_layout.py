"""CONTRIBUTING.md's Layout block maps every module of the package, and no other.

The block lists each ``*.py`` file under ``src/django_sapool`` (package
``__init__.py`` files included) by its path there, followed by its one concern.
A new module without its line, or a line left behind by a removed module,
fails here, naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "django_sapool"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"

SECTION = re.compile(r"^## Layout\n(.*?)(?=^## |\Z)", re.MULTILINE | re.DOTALL)
FENCE = re.compile(r"^```\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def layout_lines() -> list[str]:
    """The lines of the first fenced block of CONTRIBUTING.md's Layout section."""
    section = SECTION.search(CONTRIBUTING.read_text())
    assert section, "CONTRIBUTING.md has no '## Layout' section"
    block = FENCE.search(section.group(1))
    assert block, "CONTRIBUTING.md's Layout section has no fenced block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def mapped_modules() -> dict[str, str]:
    """Path under src/django_sapool -> its concern; directory lines are headings."""
    mapped: dict[str, str] = {}
    for line in layout_lines():
        path, _, concern = line.partition(" ")
        if path.endswith("/"):
            continue
        assert path.endswith(".py"), f"Layout line is not a module path: {line!r}"
        assert path not in mapped, f"{path} is listed twice in the Layout"
        assert concern.strip(), f"{path} has no concern in the Layout"
        mapped[path] = concern.strip()
    return mapped


def package_modules() -> set[str]:
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_the_layout_maps_every_module_and_no_other() -> None:
    mapped = set(mapped_modules())
    modules = package_modules()
    assert modules, f"no module found under {PACKAGE}"
    problems: list[str] = []
    if missing := sorted(modules - mapped):
        problems.append(f"missing from CONTRIBUTING.md's Layout: {missing}")
    if absent := sorted(mapped - modules):
        problems.append(f"in CONTRIBUTING.md's Layout but absent: {absent}")
    assert not problems, "; ".join(problems)

"""Build the sdist into a temporary directory and check what it ships.

It must hold every file git tracks except CI glue (``.ci/``, ``.gitignore``),
plus the metadata the build generates, and nothing else: no ``__pycache__``,
``.nox``, ``.git`` or any other untracked file. Run from a git checkout::

    python tools/check_sdist.py [--no-isolation]

``--no-isolation`` builds with the setuptools already installed (as
``nox -s sdist`` does) instead of fetching it into a fresh environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = (".ci/", ".gitignore")
GENERATED = ("PKG-INFO", "setup.cfg", "src/django_sapool.egg-info/")


def tracked_files() -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return {
        name
        for name in out.split("\0")
        if name and not name.startswith(NOT_SHIPPED) and (ROOT / name).exists()
    }


def sdist_files(isolation: bool) -> set[str]:
    egg_info = ROOT / "src" / "django_sapool.egg-info"
    had_egg_info = egg_info.exists()
    with tempfile.TemporaryDirectory(prefix="sapool-sdist-") as out:
        command = [sys.executable, "-m", "build", "--sdist", "--outdir", out]
        if not isolation:
            command.append("--no-isolation")
        try:
            build = subprocess.run(
                [*command, str(ROOT)], capture_output=True, text=True, check=False
            )
        finally:
            if not had_egg_info:
                shutil.rmtree(egg_info, ignore_errors=True)
        if build.returncode:
            sys.exit(f"{build.stdout}{build.stderr}building the sdist failed")
        (archive,) = Path(out).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            names = [member.name for member in tar.getmembers() if member.isfile()]
    # Each name starts with the top directory, django_sapool-<version>/.
    return {name.split("/", 1)[1] for name in names}


def main() -> int:
    shipped = sdist_files(isolation="--no-isolation" not in sys.argv[1:])
    expected = tracked_files()
    missing = sorted(expected - shipped)
    unexpected = sorted(
        name for name in shipped - expected if not name.startswith(GENERATED)
    )
    for name in missing:
        print(f"missing from the sdist: {name}")
    for name in unexpected:
        print(f"not tracked by git, yet in the sdist: {name}")
    if missing or unexpected:
        print("sdist check failed: fix MANIFEST.in (or clean the working tree)")
        return 1
    print(f"sdist check: {len(shipped)} files, every tracked file and nothing else")
    return 0


if __name__ == "__main__":
    sys.exit(main())

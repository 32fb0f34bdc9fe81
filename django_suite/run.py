"""Django's own test suite on our backends, beside Django's (``nox -s django``).

For the installed Django version, fetch its source distribution (it carries
``tests/runtests.py`` and the whole suite), then run the chosen test apps once
with Django's stock ENGINE and once with ours, for each driver, with
``--parallel`` so test databases are cloned through the backend under test.
Outcomes are compared test by test: a test failing only with ours is our bug,
unless django_suite/expected_failures.py lists it with a reason.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import django

from django_suite.expected_failures import EXPECTED

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".nox" / "django-source"
RESULTS = ROOT / "django_suite" / "results"

APPS = [
    "backends",
    "transactions",
    "transaction_hooks",
    "select_for_update",
    "basic",
    "queries",
    "expressions",
    "aggregation",
    "model_fields",
    "timezones",
    "bulk_create",
    "update",
    "delete",
    "db_functions",
    "migrations",
    "schema",
    "test_utils",
    "fixtures",
]
POSTGRESQL_APPS = ["postgres_tests"]
#: What CI runs: the apps closest to connection handling, within its time.
CI_APPS = [
    "backends",
    "transactions",
    "transaction_hooks",
    "select_for_update",
    "test_utils",
    "timezones",
    "basic",
    "delete",
]
#: GeoDjango's database-heavy test packages, for --gis.
GIS_APPS = [
    "gis_tests.geoapp",
    "gis_tests.geo3d",
    "gis_tests.distapp",
    "gis_tests.relatedapp",
    "gis_tests.geogapp",
    "gis_tests.gis_migrations",
    "gis_tests.inspectapp",
    "gis_tests.rasterapp",
]
#: What CI runs of them.
GIS_CI_APPS = ["gis_tests.geoapp", "gis_tests.gis_migrations", "gis_tests.relatedapp"]
DRIVERS = {"psycopg": "postgresql", "psycopg2": "postgresql", "mysqlclient": "mysql"}


def django_tests_dir() -> Path:
    """The tests/ directory of the installed Django's source distribution."""
    version = django.__version__
    target = CACHE / version
    if not (target / "tests" / "runtests.py").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-binary",
                    ":all:",
                    "--no-deps",
                    f"Django=={version}",
                    "-d",
                    download,
                ],
                check=True,
            )
            (archive,) = Path(download).glob("*.tar.gz")
            with tarfile.open(archive) as tar:
                prefix = tar.getnames()[0].split("/")[0]
                members = [
                    m for m in tar.getmembers() if m.name.startswith(f"{prefix}/tests/")
                ]
                tar.extractall(CACHE, members=members, filter="data")
            (CACHE / prefix).rename(target)
    return target / "tests"


def run_suite(
    driver: str, engine: str, apps: list[str], parallel: int, gis: bool = False
) -> dict[str, Any]:
    """Run Django's suite for some apps; return outcome per test id and timing."""
    tests_dir = django_tests_dir()
    with tempfile.NamedTemporaryFile(suffix=".json") as results:
        env = {
            **os.environ,
            "SAPOOL_TEST_DRIVER": driver,
            "SAPOOL_SUITE_ENGINE": engine,
            "SAPOOL_SUITE_RESULTS": results.name,
            "SAPOOL_SUITE_GIS": "1" if gis else "0",
            "PYTHONPATH": str(ROOT),
        }
        started = time.monotonic()
        completed = subprocess.run(
            [
                sys.executable,
                "runtests.py",
                "--settings=django_suite.settings",
                f"--parallel={parallel}",
                "--noinput",
                "-v",
                "1",
                *apps,
            ],
            cwd=tests_dir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
        outcomes = json.loads(Path(results.name).read_text() or "{}")
    if not outcomes:
        raise SystemExit(
            f"{driver}/{engine}: the suite did not run:\n{completed.stderr[-3000:]}"
        )
    return {"outcomes": outcomes, "seconds": seconds, "log": completed.stderr}


def expected_failures(driver: str) -> dict[str, str]:
    """Tests allowed to fail only with our ENGINE, with the reason why."""
    expected: dict[str, str] = {}
    for section in ("all", DRIVERS[driver], driver):
        expected.update(EXPECTED.get(section, {}))
    return expected


def app_of(test_id: str) -> str:
    # "backends.tests.X.test_y" or "setUpClass (backends.tests.X)"
    parts = test_id.split("(")[-1].strip(" )").split(".")
    return ".".join(parts[:2]) if parts[0] == "gis_tests" else parts[0]


def compare(driver: str, stock: dict[str, str], ours: dict[str, str]) -> dict[str, Any]:
    bad = {"failure", "error", "unexpected success"}
    expected = expected_failures(driver)
    ours_only = sorted(
        t for t, o in ours.items() if o in bad and stock.get(t) not in bad
    )
    per_app: dict[str, dict[str, Counter[str]]] = {}
    for engine, outcomes in (("stock", stock), ("sapool", ours)):
        for test_id, outcome in outcomes.items():
            per_app.setdefault(
                app_of(test_id), {"stock": Counter(), "sapool": Counter()}
            )
            per_app[app_of(test_id)][engine][outcome] += 1
    return {
        "per_app": per_app,
        "explained": {t: expected[t] for t in ours_only if t in expected},
        "unexplained": [t for t in ours_only if t not in expected],
        "fixed": sorted(t for t in expected if t in ours and ours[t] not in bad),
    }


def _cell(counts: Counter[str]) -> str:
    failed = counts["failure"] + counts["unexpected success"]
    return (
        f"{sum(counts.values())} / {counts['ok'] + counts['expected failure']} / "
        f"{failed} / {counts['error']} / {counts['skipped']}"
    )


def report(driver: str, comparison: dict[str, Any], seconds: dict[str, float]) -> str:
    lines = [
        f"### {driver} (Django {django.__version__}; stock {seconds['stock']:.0f} s, "
        f"sapool {seconds['sapool']:.0f} s)",
        "",
        "| app | stock: run / passed / failed / errors / skipped "
        "| sapool: run / passed / failed / errors / skipped "
        "| failing only with sapool |",
        "|---|---|---|---:|",
    ]
    total: dict[str, Counter[str]] = {"stock": Counter(), "sapool": Counter()}
    only = Counter(
        app_of(t) for t in comparison["unexplained"] + list(comparison["explained"])
    )
    for app, counts in sorted(comparison["per_app"].items()):
        total["stock"] += counts["stock"]
        total["sapool"] += counts["sapool"]
        lines.append(
            f"| {app} | {_cell(counts['stock'])} | {_cell(counts['sapool'])} "
            f"| {only[app]} |"
        )
    lines.append(
        f"| **all** | {_cell(total['stock'])} | {_cell(total['sapool'])} "
        f"| {sum(only.values())} |"
    )
    if comparison["explained"]:
        lines += [
            "",
            "Failing only with sapool, expected (django_suite/expected_failures.py):",
        ]
        lines += [f"- `{t}`: {reason}" for t, reason in comparison["explained"].items()]
    if comparison["unexplained"]:
        lines += ["", "**Failing only with sapool, unexplained:**"]
        lines += [f"- `{t}`" for t in comparison["unexplained"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", default=",".join(DRIVERS))
    parser.add_argument(
        "--apps", default="", help="comma-separated; default: the full list"
    )
    parser.add_argument("--ci", action="store_true", help="the subset CI runs")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--gis", action="store_true", help="GeoDjango: gis_tests")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = False
    sections = []
    suffix = "-gis" if args.gis else ""
    for driver in args.drivers.split(","):
        if args.apps:
            apps = args.apps.split(",")
        elif args.gis:
            apps = GIS_CI_APPS if args.ci else GIS_APPS
        elif args.ci:
            apps = CI_APPS
        else:
            apps = APPS + (POSTGRESQL_APPS if DRIVERS[driver] == "postgresql" else [])
        runs = {}
        for engine in ("stock", "sapool"):
            print(
                f"django suite: {driver} / {engine}: {len(apps)} apps ...", flush=True
            )
            runs[engine] = run_suite(driver, engine, apps, args.parallel, args.gis)
            (RESULTS / f"{driver}{suffix}-{engine}.log").write_text(runs[engine]["log"])
        comparison = compare(
            driver, runs["stock"]["outcomes"], runs["sapool"]["outcomes"]
        )
        section = report(driver, comparison, {e: r["seconds"] for e, r in runs.items()})
        print(section, flush=True)
        sections.append(section)
        (RESULTS / f"{driver}{suffix}.json").write_text(
            json.dumps(
                {e: r["outcomes"] for e, r in runs.items()}, indent=1, sort_keys=True
            )
        )
        failed = failed or bool(comparison["unexplained"])
    (RESULTS / f"report{suffix}.md").write_text("\n".join(sections))
    if failed:
        raise SystemExit("tests fail only with django_sapool's ENGINE; see above")


if __name__ == "__main__":
    main()

"""Development sessions: ``nox -s tests`` is the test command (README, CI).

The suite sessions (tests, faults, matrix, pgbouncer) share ``_suite``: install
the package with the drivers' extras and the test groups, then run the suite
once per driver, with ``PYTHONDEVMODE=1`` (pytest makes a ResourceWarning an
error: a connection left open fails the run). SAPOOL_DRIVERS_AT_ONCE=1 runs
the drivers side by side, each with a test database of its own (CI does).

Dependency groups (pyproject.toml): ``test`` is pytest and what the tests
import; ``recipes`` is the servers tests/test_recipes.py starts (gunicorn,
uWSGI, Celery, uvicorn). uWSGI compiles from source, so ``pip install --group
test`` alone gives a quick setup whose recipe tests skip, saying why. The
sessions that run the whole suite (tests, faults, matrix) install both: the
README's command runs every test, and under CI=true a skip is a failure. pip
keeps the uWSGI wheel it built, so it compiles once per machine and Python.
pgbouncer installs ``test`` alone: the recipe tests never run behind PgBouncer.

``nox -s tests`` also measures line coverage of the installed package, all
drivers combined, and fails under the floor in pyproject.toml when it ran the
whole suite (no arguments after ``--``, every driver).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
DRIVERS = ("psycopg", "psycopg2", "mysqlclient")

nox.options.sessions = ["tests", "lint", "mypy"]
nox.options.reuse_existing_virtualenvs = True
# A matrix interpreter that is missing is a skip on a laptop, an error in CI.
nox.options.error_on_missing_interpreters = os.environ.get("CI", "") in {"1", "true"}

#: (Python, Django, SQLAlchemy) combinations we support, as each supports:
#: Django 4.2 runs on 3.8-3.12, 5.2 on 3.10-3.13, 6.x on 3.12+; SQLAlchemy
#: 2.1 needs 3.11+. CI runs the oldest and the newest (tag "ci").
MATRIX = [
    nox.param("3.10", "4.2", "2.0", id="py3.10-django4.2-sa2.0", tags=["ci"]),
    nox.param("3.10", "5.2", "2.0", id="py3.10-django5.2-sa2.0"),
    nox.param("3.11", "4.2", "2.0", id="py3.11-django4.2-sa2.0"),
    nox.param("3.11", "5.2", "2.1", id="py3.11-django5.2-sa2.1"),
    nox.param("3.12", "4.2", "2.1", id="py3.12-django4.2-sa2.1"),
    nox.param("3.12", "5.2", "2.0", id="py3.12-django5.2-sa2.0"),
    nox.param("3.12", "6.0", "2.1", id="py3.12-django6.0-sa2.1"),
    nox.param("3.13", "5.2", "2.1", id="py3.13-django5.2-sa2.1"),
    nox.param("3.13", "6.0", "2.0", id="py3.13-django6.0-sa2.0"),
    nox.param("3.13", "6.1", "2.1", id="py3.13-django6.1-sa2.1", tags=["ci"]),
]


def _suite(
    session: nox.Session,
    *command: str,
    drivers: Sequence[str] = DRIVERS,
    recipes: bool = True,
    install: Sequence[str] = (),
) -> list[str]:
    """Install the package and the test groups, run ``command`` once per driver.

    ``command`` (pytest unless given) gets the arguments after ``--``; a
    ``{driver}`` in it becomes the driver's name, which is also in
    SAPOOL_TEST_DRIVER. SAPOOL_TEST_DRIVERS=a,b runs a subset of ``drivers``.
    Returns the drivers run.
    """
    _system_packages(session, mysqlclient="mysqlclient" in drivers, recipes=recipes)
    groups = ("test", "recipes") if recipes else ("test",)
    session.install(
        f".[{','.join(drivers)}]",
        *install,
        *nox.project.dependency_groups(PYPROJECT, *groups),
    )
    runs = {
        driver: (
            [part.format(driver=driver) for part in command or ("pytest",)]
            + session.posargs,
            {"SAPOOL_TEST_DRIVER": driver, "PYTHONDEVMODE": "1"},
        )
        for driver in _drivers()
        if driver in drivers
    }
    if os.environ.get("SAPOOL_DRIVERS_AT_ONCE") == "1":
        _at_once(session, runs)
    else:
        for driver, (args, env) in runs.items():
            session.log(f"--- driver: {driver}")
            session.run(*args, env=env)
    return list(runs)


def _at_once(
    session: nox.Session, runs: dict[str, tuple[list[str], dict[str, str]]]
) -> None:
    """Run every driver's command at the same time (SAPOOL_DRIVERS_AT_ONCE=1).

    The suite mostly waits on servers and timeouts, so this takes about as long
    as the slowest driver. Each run gets a test database of its own (the
    PostgreSQL drivers share a server); its output is shown whole once it ends.
    """
    database = os.environ.get("SAPOOL_TEST_DB_NAME", "test_sapool")
    venv = {k: v for k, v in session.env.items() if v is not None}
    venv["PATH"] = os.pathsep.join([session.bin, os.environ["PATH"]])
    started = {}
    venv["VIRTUAL_ENV"] = session.virtualenv.location
    for driver, (args, extra) in runs.items():
        env = {**os.environ, **venv, **extra}
        env["SAPOOL_TEST_DB_NAME"] = f"{database}_{driver}"
        log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        started[driver] = log, process
    failed = []
    for driver, (log, process) in started.items():
        code = process.wait()
        session.log(f"--- driver: {driver} ({' '.join(runs[driver][0])}): exit {code}")
        log.seek(0)
        print(log.read(), end="", flush=True)
        log.close()
        failed += [driver] if code else []
    if failed:
        session.error(f"failed with {', '.join(failed)}")


def _drivers() -> list[str]:
    """Drivers to test: all, or those listed in SAPOOL_TEST_DRIVERS (a,b)."""
    chosen = os.environ.get("SAPOOL_TEST_DRIVERS", ",".join(DRIVERS)).split(",")
    unknown = set(chosen) - set(DRIVERS)
    if unknown:
        raise SystemExit(
            f"SAPOOL_TEST_DRIVERS: unknown {sorted(unknown)}; use {DRIVERS}"
        )
    return chosen


def _system_packages(
    session: nox.Session, *, mysqlclient: bool = True, recipes: bool = True
) -> None:
    """Make sure the system has what pip cannot install, before pip runs.

    mysqlclient compiles against libmariadb (found with pkg-config); the recipe
    tests compile uWSGI (a C compiler) and need a Redis server. As root on
    Debian/Ubuntu the missing packages are installed; otherwise the session
    stops, naming the command to run.
    """
    missing: list[str] = []
    if mysqlclient:
        if not shutil.which("pkg-config"):
            missing += ["pkg-config", "libmariadb-dev"]
        elif not any(
            subprocess.call(["pkg-config", "--exists", lib]) == 0
            for lib in ("libmariadb", "mysqlclient")
        ):
            missing.append("libmariadb-dev")
    if recipes and not (shutil.which("gcc") or shutil.which("cc")):
        missing.append("gcc")
    if recipes and not shutil.which("redis-server"):
        missing.append("redis-server")
    if not missing:
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        session.log(f"installing system packages with apt-get: {' '.join(missing)}")
        session.run("apt-get", "update", "-qq", external=True)
        session.run(
            "apt-get", "install", "-y", "-qq", *missing,
            env={"DEBIAN_FRONTEND": "noninteractive"}, external=True,
        )  # fmt: skip
        return
    session.error(
        f"missing system packages: {', '.join(missing)}. Install them first, "
        f"on Debian/Ubuntu: sudo apt-get install {' '.join(missing)}"
    )


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the real servers, once per driver, with coverage."""
    data = os.path.join(session.create_tmp(), "coverage")
    shutil.rmtree(data, ignore_errors=True)  # a previous run's figures
    os.makedirs(data)
    session.env["COVERAGE_FILE"] = os.path.join(data, ".coverage")
    install = nox.project.dependency_groups(PYPROJECT, "coverage")
    drivers = _suite(session, "coverage", "run", "-m", "pytest", install=install)
    session.run("coverage", "combine", "--quiet")
    whole = not session.posargs and len(drivers) == len(DRIVERS)
    session.run("coverage", "report", *([] if whole else ["--fail-under=0"]))


@nox.session
def faults(session: nox.Session) -> None:
    """The fault scenarios alone, with their figures, once per driver."""
    _suite(session, "pytest", "-m", "faults", "-s")


@nox.session
@nox.parametrize(("python", "django", "sqlalchemy"), MATRIX)
def matrix(session: nox.Session, django: str, sqlalchemy: str) -> None:
    """The test suite on one Python x Django x SQLAlchemy combination, all drivers.

    Interpreters come from PATH: with pyenv, expose them all first, e.g.
    ``pyenv global 3.11 3.10 3.12 3.13`` (or PYENV_VERSION=3.11:3.10:3.12:3.13).
    """
    _suite(session, install=[f"django=={django}.*", f"sqlalchemy=={sqlalchemy}.*"])


@nox.session
def pgbouncer(session: nox.Session) -> None:
    """The test suite through PgBouncer, transaction and session mode.

    Needs the pgbouncer binary (Debian package pgbouncer); see docs/pgbouncer.md.
    """
    _suite(
        session,
        "python", "-m", "tests.support.behind_pgbouncer", "--drivers={driver}",
        drivers=("psycopg", "psycopg2"), recipes=False,
    )  # fmt: skip


@nox.session
def django(session: nox.Session) -> None:
    """Run Django's own test suite on our backends, beside Django's (long).

    SAPOOL_DJANGO picks the Django version (a pip specifier, e.g. "==4.2.*");
    arguments go to django_suite/run.py (--ci, --drivers, --apps, --gis).
    """
    _system_packages(session, recipes=False)
    session.install(
        ".[psycopg,psycopg2,mysqlclient]",
        f"django{os.environ.get('SAPOOL_DJANGO', '')}",
        *nox.project.dependency_groups(PYPROJECT, "django-suite"),
    )
    session.run("python", "-m", "django_suite.run", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff, and the package's import graph."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "tools/check_imports.py")  # an acyclic import graph


@nox.session
def mypy(session: nox.Session) -> None:
    """Type-check the package and the tests (strict)."""
    # django-stubs' plugin sets Django up, which loads the test settings' backend.
    session.install(".[psycopg]", *nox.project.dependency_groups(PYPROJECT, "typing"))
    session.run(
        "mypy",
        "src/django_sapool",
        "tests",
        "benchmarks",
        "django_suite",
        "examples/demo.py",
        "noxfile.py",
        "tools",
    )


@nox.session
def sdist(session: nox.Session) -> None:
    """Build the sdist and check it ships every tracked file and nothing else."""
    session.install("build", *PYPROJECT["build-system"]["requires"])
    session.run("python", "tools/check_sdist.py", "--no-isolation")


@nox.session
def demo(session: nox.Session) -> None:
    """The example shop under gunicorn, stock backend vs ours (about a minute).

    Uses SAPOOL_DEMO_DATABASE_URL (postgresql://... or mysql://...) if set,
    else an embedded PostgreSQL (pgserver): nothing to install first.
    """
    url = os.environ.get("SAPOOL_DEMO_DATABASE_URL", "")
    extra = "mysqlclient" if url.startswith("mysql") else "psycopg"
    if extra == "mysqlclient":
        _system_packages(session, recipes=False)
    session.install(f".[{extra}]", *nox.project.dependency_groups(PYPROJECT, "demo"))
    session.run("python", "examples/demo.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark pooled and unpooled configurations side by side (about 35 min)."""
    _system_packages(session, recipes=False)
    session.install(
        ".[psycopg,psycopg2,mysqlclient]",
        *nox.project.dependency_groups(PYPROJECT, "bench"),
    )
    for tool in ("wrk", "valgrind"):  # load generator; instruction counts
        if not shutil.which(tool):
            if os.geteuid() != 0:
                session.error(f"the benchmark needs {tool}: apt-get install {tool}")
            session.run("apt-get", "install", "-y", "-qq", tool, external=True)
    session.run("python", "-m", "benchmarks.run", *session.posargs)
    session.run("python", "-m", "benchmarks.micro")
    session.run("python", "-m", "benchmarks.cpu")
    session.run("python", "-m", "benchmarks.instructions")

"""The deployment recipes of docs/deployment.md, each run on the real server program.

Every test starts a real program (gunicorn, uWSGI, uvicorn, a Celery worker, a
management command) as a subprocess in a process group of its own, drives
concurrent requests or tasks at it, and asserts on what the database server
saw: which sessions each worker process used (never one shared by two
processes), how many sessions the program had at once (at most processes x
(pool_size + max_overflow)), that a master's session outlives the workers it
forked, that nothing is left idle in a transaction, and that every session
ends when the program stops. The programs log in as a user of their own, so
that their sessions are told apart from everyone else's on the server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.private_server import free_port
from tests.recipes.gunicorn_conf import EXIT_PAUSE
from tests.recipes.settings import MAX_OVERFLOW, POOL_SIZE
from tests.server import VENDOR, Observer

# direct_server: each recipe tells worker processes apart by server session.
# faults: the forking-server scenarios of the fault suite (nox -s faults).
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.direct_server,
    pytest.mark.faults,
]

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
#: The most sessions one process of a recipe may have at once.
PER_PROCESS = POOL_SIZE + MAX_OVERFLOW
STARTUP_TIMEOUT = 60.0
REDIS_URL = os.environ.get("SAPOOL_REDIS_URL", "redis://127.0.0.1:6379/13")


# The recipes' own login ------------------------------------------------------


class Sessions:
    """The server sessions of the recipes' login, as the server reports them."""

    def __init__(self, observer: Observer, user: str) -> None:
        self.observer = observer
        self.user = user
        #: The most sessions seen at once by sample().
        self.peak = 0

    def ids(self) -> set[int]:
        if VENDOR == "postgresql":
            sql = "SELECT pid FROM pg_stat_activity WHERE usename = %s"
        else:
            sql = "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s"
        return {int(row[0]) for row in self.observer.rows(sql, [self.user])}

    def sample(self) -> set[int]:
        ids = self.ids()
        self.peak = max(self.peak, len(ids))
        return ids

    def idle_in_transaction(self) -> set[int]:
        return self.observer.idle_in_transaction(self.ids())

    def wait_for(
        self, check: Callable[[set[int]], bool], what: str, timeout: float = 15.0
    ) -> set[int]:
        deadline = time.monotonic() + timeout
        while not check(ids := self.ids()):
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: the server still shows sessions {ids}")
            time.sleep(0.05)
        return ids

    def wait_none(self) -> None:
        self.wait_for(lambda ids: not ids, "all sessions gone after the program ended")

    def abandoned_so_far(self) -> int:
        """PostgreSQL: sessions on the database that ended by a dropped socket."""
        assert VENDOR == "postgresql"
        return int(
            self.observer.value(
                "SELECT sessions_abandoned FROM pg_stat_database WHERE datname = %s",
                [self.observer.wrapper.settings_dict["NAME"]],
            )
        )


@pytest.fixture
def login(observer: Observer) -> Iterator[dict[str, str]]:
    """A database login for the recipes' programs, dropped afterwards."""
    user = f"sapool_recipes_{os.getpid()}"
    password = secrets.token_urlsafe(12)
    database = observer.wrapper.settings_dict["NAME"]
    host = observer.wrapper.settings_dict["HOST"] or "localhost"
    if VENDOR == "postgresql":
        observer.rows(
            f"DO $$ BEGIN CREATE ROLE {user} LOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        observer.rows(f"ALTER ROLE {user} PASSWORD '{password}'")
        observer.rows(f'GRANT CONNECT ON DATABASE "{database}" TO {user}')
    else:
        observer.rows(
            f"CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{password}'"
        )
        observer.rows(f"ALTER USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
        observer.rows(f"GRANT ALL ON `{database}`.* TO '{user}'@'{host}'")
    yield {
        "SAPOOL_RECIPES_NAME": database,
        "SAPOOL_RECIPES_USER": user,
        "SAPOOL_RECIPES_PASSWORD": password,
    }
    # The programs are gone (spawn's teardown runs first); so must be their
    # sessions, though the server may need a moment to notice a killed one.
    remaining = Sessions(observer, user)
    deadline = time.monotonic() + 5
    while (leftovers := remaining.ids()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for session in leftovers:
        observer.kill(session)
    if VENDOR == "postgresql":
        observer.rows(f'REVOKE ALL ON DATABASE "{database}" FROM {user}')
        observer.rows(f"DROP ROLE IF EXISTS {user}")
    else:
        observer.rows(f"DROP USER IF EXISTS '{user}'@'{host}'")
    assert not leftovers, f"sessions left behind by the test's programs: {leftovers}"


@pytest.fixture
def sessions(observer: Observer, login: dict[str, str]) -> Sessions:
    return Sessions(observer, login["SAPOOL_RECIPES_USER"])


# Programs ----------------------------------------------------------------------


class Program:
    """A program started in a process group of its own; output goes to a log."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, *, talk: bool
    ) -> None:
        self.args = args
        self.log = log
        with open(log, "wb") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
                stdout=subprocess.PIPE if talk else out,
                stderr=out,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def output(self) -> str:
        """The end of the program's log, for failure messages."""
        text = self.log.read_text(errors="replace")
        return f"{' '.join(self.args)}\n--- log (end) ---\n{text[-4000:]}"

    def check_running(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"exited early ({self.process.returncode}):\n{self.output()}")

    def members(self) -> set[int]:
        """Live processes of the group (the program and its workers)."""
        members = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (name)"
            if fields[0] != "Z" and int(fields[2]) == self.pid:
                members.add(int(entry.name))
        return members

    def read_json(
        self, sessions: Sessions, timeout: float = STARTUP_TIMEOUT
    ) -> dict[str, Any]:
        """The next line the program prints, as JSON; samples the server meanwhile."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while not select.select([self.process.stdout], [], [], 0.02)[0]:
            sessions.sample()
            self.check_running()
            if time.monotonic() > deadline:
                pytest.fail(f"no output within {timeout} s:\n{self.output()}")
        line = self.process.stdout.readline().decode()
        try:
            return dict(json.loads(line))
        except ValueError:
            pytest.fail(f"printed {line!r}, not JSON:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Ask the program to stop; wait until it and its workers are gone."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        if sig:
            os.kill(self.pid, sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"did not stop within {timeout} s:\n{self.output()}")
        deadline = time.monotonic() + 10
        while self.members():
            if time.monotonic() > deadline:
                pytest.fail(f"workers outlived the program: {self.members()}")
            time.sleep(0.05)
        return code

    def kill(self) -> None:
        """Kill the whole process group, whatever state it is in."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def spawn(login: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Program]]:
    """Factory: ``spawn(args, env={...}, talk=False)``; kills what it started."""
    started: list[Program] = []
    numbers = itertools.count()

    def start(
        args: list[str], *, env: dict[str, str] | None = None, talk: bool = False
    ) -> Program:
        environment = {
            **os.environ,
            **login,
            **(env or {}),
            "DJANGO_SETTINGS_MODULE": "tests.recipes.settings",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
            ),
        }
        log = tmp_path / f"program{next(numbers)}.log"
        program = Program(args, environment, log, talk=talk)
        started.append(program)
        return program

    yield start
    for program in started:
        program.kill()


def need_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (pip install {name})")


# HTTP ----------------------------------------------------------------------------

_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str) -> dict[str, Any]:
    with _http.open(url, timeout=30) as response:
        return dict(json.load(response))


def wait_until_serving(program: Program, url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        program.check_running()
        try:
            get_json(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"not serving within {STARTUP_TIMEOUT} s:\n{program.output()}"
                )
            time.sleep(0.1)


def drive(
    url: str,
    sessions: Sessions,
    *,
    processes: int = WORKERS,
    requests: int = 40,
    concurrency: int = 6,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Concurrent requests until ``processes`` distinct workers have answered.

    Samples the server's sessions meanwhile (Sessions.peak).
    """
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                results.append(get_json(url))
            except BaseException as exc:
                errors.append(exc)
                return

    clients = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not errors and time.monotonic() < deadline:
            sessions.sample()
            if (
                len(results) >= requests
                and len({r["pid"] for r in results}) >= processes
            ):
                break
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert errors == []
    answered = {r["pid"] for r in results}
    assert len(answered) >= processes, f"only {answered} answered within {timeout} s"
    return results


def sessions_by_process(results: list[dict[str, Any]]) -> dict[int, set[int]]:
    """Worker pid -> the server sessions it used; asserts no session is shared."""
    used: dict[int, set[int]] = defaultdict(set)
    for result in results:
        used[result["pid"]].add(result["backend"])
    for first, second in itertools.combinations(used, 2):
        shared = used[first] & used[second]
        assert not shared, f"processes {first} and {second} both used {shared}"
    return dict(used)


def check_forked_workers(
    program: Program,
    sessions: Sessions,
    results: list[dict[str, Any]],
    *,
    loaded_in_master: bool,
    recycled: bool = False,
) -> dict[int, set[int]]:
    """What every forking server must show; returns the sessions by worker.

    ``recycled``: workers were replaced during the run (more pids than WORKERS).
    """
    used = sessions_by_process(results)
    assert len(used) >= WORKERS if recycled else len(used) == WORKERS
    assert program.pid not in used
    startups = {json.dumps(result["startup"]) for result in results}
    if loaded_in_master:
        # One import, in the master; its session is none of the workers'.
        assert len(startups) == 1, startups
        startup = results[0]["startup"]
        assert startup["pid"] == program.pid
        assert all(startup["backend"] not in ids for ids in used.values())
        # The workers neither used nor closed the master's connection.
        assert startup["backend"] in sessions.ids()
    else:
        assert all(r["startup"]["pid"] == r["pid"] for r in results)
    master = 1 if loaded_in_master else 0
    assert sessions.peak <= WORKERS * PER_PROCESS + master
    # Between requests every connection is back in a pool, rolled back.
    assert not sessions.idle_in_transaction()
    assert len(sessions.ids()) <= WORKERS * PER_PROCESS + master
    scenario = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split()[0]
    print(
        f"\n[fault] forking server {scenario}: requests={len(results)}, errors=0, "
        f"workers={len(used)}, distinct_sessions_per_worker="
        f"{sorted(len(ids) for ids in used.values())}, shared_sessions=0, "
        f"server_sessions_max={sessions.peak}, "
        f"master_session_kept={loaded_in_master}"
    )
    return used


# gunicorn ------------------------------------------------------------------------


def retire_one_worker(
    program: Program,
    sessions: Sessions,
    results: list[dict[str, Any]],
    retire: Callable[[set[int]], None],
    *,
    exited: Path | None = None,
) -> None:
    """Make one worker leave while the master stays (max_requests, scaling down).

    Its sessions end; the master's session, which it inherited, must not.
    With ``exited`` (gunicorn_conf's probe directory) the sessions must end
    right after the worker_exit hook ran, while the worker still exists.
    """
    workers = program.members() - {program.pid}
    live = sessions.ids()
    own: dict[int, set[int]] = defaultdict(set)
    for result in results:
        own[result["pid"]].add(result["backend"])
        if result["startup"] and result["startup"]["pid"] == result["pid"]:
            own[result["pid"]].add(result["startup"]["backend"])
    own = {pid: own[pid] & live for pid in workers}
    assert all(own.values()), f"every worker holds a session: {own}"
    retire(workers)
    deadline = time.monotonic() + 15
    while not (
        left := {int(p.name) for p in exited.iterdir()}
        if exited
        else workers - program.members()
    ):
        if time.monotonic() > deadline:
            pytest.fail(f"no worker left:\n{program.output()}")
        time.sleep(0.02)
    (leaver,) = left
    if exited:
        sessions.wait_for(
            lambda ids: not own[leaver] & ids, "worker_exit ends them", EXIT_PAUSE / 2
        )
        assert leaver in program.members(), "sessions ended only with the process"
    while leaver in program.members():
        time.sleep(0.02)
    sessions.wait_for(lambda ids: not own[leaver] & ids, "the leaver's sessions end")
    startup = results[0]["startup"]
    if startup and startup["pid"] == program.pid:
        time.sleep(0.2)  # a goodbye sent on the master's socket takes effect now
        assert startup["backend"] in sessions.ids(), (
            "the leaving worker ended the master's session"
        )


def run_gunicorn(
    spawn: Callable[..., Program],
    sessions: Sessions,
    tmp_path: Path,
    *,
    worker_class: str,
    preload: bool,
    hooks: bool,
) -> None:
    need_module("gunicorn")
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "tests.recipes.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        f"--workers={WORKERS}",
        f"--worker-class={worker_class}",
        "--graceful-timeout=10",
        "--log-level=warning",
    ]
    if worker_class == "gthread":
        args.append("--threads=4")  # with sync, this would switch to gthread
    if preload:
        args.append("--preload")
    exited: Path | None = None
    if hooks:
        args.append("--config=python:tests.recipes.gunicorn_conf")
        exited = tmp_path / "exited"
        exited.mkdir()
    abandoned = sessions.abandoned_so_far() if VENDOR == "postgresql" else 0
    program = spawn(args, env={"SAPOOL_RECIPES_EXITED_DIR": str(exited or "")})
    url = f"http://127.0.0.1:{port}/backend/"
    wait_until_serving(program, url)
    results = drive(url, sessions)
    used = check_forked_workers(program, sessions, results, loaded_in_master=preload)
    if worker_class == "sync":
        # One request at a time per worker: one connection, reused throughout.
        assert all(len(ids) == 1 for ids in used.values()), used
    retire_one_worker(
        program,
        sessions,
        results,
        lambda workers: os.kill(program.pid, signal.SIGTTOU),  # one worker fewer
        exited=exited,
    )
    if exited:
        shutil.rmtree(exited)  # no more pauses at exit
    assert program.stop() == 0
    sessions.wait_none()
    if hooks and VENDOR == "postgresql":
        # Every session said goodbye; none ended by a dropped socket.
        assert sessions.abandoned_so_far() == abandoned


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_gunicorn(
    spawn: Callable[..., Program],
    sessions: Sessions,
    tmp_path: Path,
    worker_class: str,
) -> None:
    run_gunicorn(
        spawn, sessions, tmp_path, worker_class=worker_class, preload=False, hooks=True
    )


@pytest.mark.parametrize("hooks", [True, False], ids=["hooks", "no-hooks"])
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_gunicorn_preload(
    spawn: Callable[..., Program],
    sessions: Sessions,
    tmp_path: Path,
    worker_class: str,
    hooks: bool,
) -> None:
    """The app queries at import, in the master; workers inherit that connection.

    Without the post_fork hook, fork detection alone keeps the workers apart.
    """
    run_gunicorn(
        spawn, sessions, tmp_path, worker_class=worker_class, preload=True, hooks=hooks
    )


# uWSGI -----------------------------------------------------------------------------


@pytest.mark.parametrize("lazy_apps", [False, True], ids=["preloaded", "lazy-apps"])
def test_uwsgi(
    spawn: Callable[..., Program], sessions: Sessions, lazy_apps: bool
) -> None:
    """uWSGI forks from C (no Python fork hooks) unless lazy-apps loads per worker."""
    uwsgi = shutil.which(
        "uwsgi", path=os.pathsep.join([sys.prefix + "/bin", os.environ.get("PATH", "")])
    )
    if uwsgi is None:
        pytest.skip("uwsgi is not installed (pip install uwsgi)")
    port = free_port()
    args = [
        uwsgi,
        "--master",
        f"--processes={WORKERS}",
        f"--http-socket=127.0.0.1:{port}",
        "--module=tests.recipes.wsgi:application",
        f"--virtualenv={sys.prefix}",
        f"--pythonpath={ROOT}",
        "--need-app",
        "--die-on-term",
        "--disable-logging",
    ]
    if lazy_apps:
        args.append("--lazy-apps")
    program = spawn(args)
    url = f"http://127.0.0.1:{port}/backend/"
    wait_until_serving(program, url)
    results = drive(url, sessions)
    used = check_forked_workers(
        program, sessions, results, loaded_in_master=not lazy_apps
    )
    assert all(len(ids) == 1 for ids in used.values()), used
    retire_one_worker(
        program,
        sessions,
        results,
        # SIGHUP to a worker: it finishes and exits; the master respawns it.
        lambda workers: os.kill(min(workers), signal.SIGHUP),
    )
    # Stop only once the respawned worker is up: uWSGI can miss the stop of a
    # worker still loading the app (seen with lazy-apps), and wait for it.
    deadline = time.monotonic() + 15
    while len(program.members() - {program.pid}) < WORKERS or (
        lazy_apps and program.log.read_text().count("WSGI app 0") < WORKERS + 1
    ):
        if time.monotonic() > deadline:
            pytest.fail(f"the retired worker was not replaced:\n{program.output()}")
        time.sleep(0.05)
    program.stop()
    sessions.wait_none()


# Celery ----------------------------------------------------------------------------


def test_celery_prefork(spawn: Callable[..., Program], sessions: Sessions) -> None:
    """Prefork pool processes, each disposing inherited pools in worker_process_init."""
    need_module("celery")
    need_module("redis")
    from celery import Celery

    broker = urllib.parse.urlsplit(REDIS_URL)
    try:
        address = (broker.hostname or "127.0.0.1", broker.port or 6379)
        socket.create_connection(address, timeout=2).close()
    except OSError as exc:
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    queue = f"sapool-recipes-{uuid.uuid4().hex}"
    program = spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "--app=tests.recipes.celery_app",
            "worker",
            "--pool=prefork",
            f"--concurrency={WORKERS}",
            "--max-tasks-per-child=5",  # pool processes exit, the main one stays
            "-O",
            "fair",
            f"--queues={queue}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ],
        env={"SAPOOL_RECIPES_QUEUE": queue, "SAPOOL_REDIS_URL": REDIS_URL},
    )
    client = Celery("recipes-client", broker=REDIS_URL, backend=REDIS_URL)
    results: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(results) < 16 or len({r["pid"] for r in results}) < WORKERS:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"tasks not served by {WORKERS} processes:\n{program.output()}"
                )
            pending = [
                client.send_task("tests.recipes.celery_app.backend", queue=queue)
                for _ in range(8)
            ]
            for result in pending:
                while not result.ready():
                    program.check_running()
                    sessions.sample()
                    if time.monotonic() > deadline:
                        pytest.fail(f"task not run:\n{program.output()}")
                    time.sleep(0.02)
                results.append(result.get(timeout=5))
                result.forget()
    finally:
        _forget_queue(client, queue)
        client.close()
    used = check_forked_workers(
        program, sessions, results, loaded_in_master=True, recycled=True
    )
    # Celery's Django fixup closes connections around each task: back to the
    # pool, so a pool process runs all its tasks on one session.
    assert all(len(ids) == 1 for ids in used.values()), used
    program.stop()
    sessions.wait_none()


def _forget_queue(client: Any, queue: str) -> None:
    """Delete what kombu keeps in Redis for a queue (the queue itself is empty)."""
    with client.connection_for_write() as connection:
        connection.default_channel.client.delete(
            queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"
        )


# multiprocessing -------------------------------------------------------------------


def test_multiprocessing_fork(
    spawn: Callable[..., Program], sessions: Sessions
) -> None:
    """A command forks a Pool; children query; the parent's connection still works."""
    program = spawn(
        [sys.executable, "-m", "django", "recipe_fanout", "--hold"], talk=True
    )
    report = program.read_json(sessions)
    parent, after = report["parent"], report["after"]
    used = sessions_by_process(report["tasks"])
    assert len(used) == 2
    assert parent["pid"] not in used
    assert all(parent["backend"] not in ids for ids in used.values())
    # The parent kept its session, and it still answers.
    assert after == parent
    # The children's sessions ended with them; the parent's lives on.
    sessions.wait_for(lambda ids: ids == {parent["backend"]}, "only the parent's")
    assert sessions.peak <= 1 + 2 * PER_PROCESS
    assert program.stop(sig=0) == 0
    sessions.wait_none()


# ASGI ------------------------------------------------------------------------------


def test_uvicorn_async_views(spawn: Callable[..., Program], sessions: Sessions) -> None:
    """Async views: each request's ORM thread gives its connection back."""
    need_module("uvicorn")
    port = free_port()
    program = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.recipes.asgi:application",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--workers={WORKERS}",
            "--log-level=warning",
        ]
    )
    url = f"http://127.0.0.1:{port}/backend-async/"
    wait_until_serving(program, url)
    # More concurrent requests than a worker's pool has connections: they
    # wait for each other's, which only works if every request returns its.
    results = drive(url, sessions, concurrency=4 * PER_PROCESS)
    sessions_by_process(results)
    assert sessions.peak <= WORKERS * PER_PROCESS
    assert not sessions.idle_in_transaction()
    # Overflow connections are closed on return (a response may reach us just
    # before its connection is returned); the pools keep pool_size.
    sessions.wait_for(
        lambda ids: len(ids) <= WORKERS * POOL_SIZE, "overflow closed", timeout=5
    )
    program.stop()
    sessions.wait_none()


# Threads and management commands ---------------------------------------------------


def test_management_command_loop(
    spawn: Callable[..., Program], sessions: Sessions
) -> None:
    """Threads loop outside requests with close_old_connections() between turns."""
    threads, iterations = 2 * PER_PROCESS, 12
    program = spawn(
        [
            sys.executable,
            "-m",
            "django",
            "recipe_loop",
            f"--threads={threads}",
            f"--iterations={iterations}",
            "--hold",
        ],
        talk=True,
    )
    report = program.read_json(sessions)
    assert report["errors"] == []
    assert report["iterations"] == threads * iterations
    # Every connection is back in the pool, rolled back; the pool kept
    # pool_size of them and closed the overflow.
    assert report["checked_out"] == 0
    assert report["connections_open"] <= POOL_SIZE
    sessions.wait_for(  # the server may take a moment to end the overflow's
        lambda ids: len(ids) == report["connections_open"], "overflow closed", 5
    )
    assert not sessions.idle_in_transaction()
    assert sessions.peak <= PER_PROCESS
    assert program.stop(sig=0) == 0
    sessions.wait_none()

"""The harness of tests/test_recipes.py: programs, their login, their sessions.

A recipe test starts a real program (gunicorn, uWSGI, uvicorn, a Celery
worker, a management command) with ``spawn``, in a process group of its own,
logged in as a user of its own (``login``) so that ``sessions`` tells its
server sessions from everyone else's. ``drive`` sends concurrent requests;
``check_forked_workers`` and ``retire_one_worker`` assert what every forking
server must show; ``run_celery`` starts a Celery worker and gathers its
tasks' reports. The fixtures are a plugin of tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import secrets
import select
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

from tests.recipes.gunicorn_conf import EXIT_PAUSE
from tests.recipes.settings import MAX_OVERFLOW, POOL_SIZE
from tests.support.server import VENDOR, Observer, Peak, server_login
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
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
        self._peak = Peak()

    @property
    def peak(self) -> int:
        return self._peak.most

    def ids(self) -> set[int]:
        if VENDOR == "postgresql":
            sql = "SELECT pid FROM pg_stat_activity WHERE usename = %s"
        else:
            sql = "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s"
        return {int(row[0]) for row in self.observer.rows(sql, [self.user])}

    def sample(self) -> set[int]:
        ids = self.ids()
        self._peak.record(len(ids))
        return ids

    def idle_in_transaction(self) -> set[int]:
        return self.observer.idle_in_transaction(self.ids())

    def wait_for(
        self, check: Callable[[set[int]], bool], what: str, timeout: float = 15.0
    ) -> set[int]:
        seen: set[int] = set()

        def matches() -> bool:
            nonlocal seen
            seen = self.ids()
            return check(seen)

        wait_until(
            matches,
            lambda: f"{what}: the server still shows sessions {seen}",
            timeout=timeout,
            interval=0.05,
        )
        return seen

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
    with server_login(observer, user, secrets.token_urlsafe(12), drop=True) as given:
        yield {
            "SAPOOL_RECIPES_NAME": observer.wrapper.settings_dict["NAME"],
            "SAPOOL_RECIPES_USER": given["USER"],
            "SAPOOL_RECIPES_PASSWORD": given["PASSWORD"],
        }
        # The programs are gone (spawn's teardown runs first); so must be their
        # sessions, though the server may need a moment to notice a killed one.
        remaining = Sessions(observer, user)
        try:
            remaining.wait_for(
                lambda ids: not ids, "sessions left behind by the programs", 5
            )
        finally:
            for session in remaining.ids():
                observer.kill(session)


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
        wait_until(
            lambda: not self.members(),
            lambda: f"workers outlived the program: {self.members()}",
            timeout=10,
            interval=0.05,
        )
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
    def serving() -> bool:
        program.check_running()
        try:
            get_json(url)
        except OSError:
            return False
        return True

    wait_until(
        serving,
        lambda: f"serving\n{program.output()}",
        timeout=STARTUP_TIMEOUT,
        interval=0.1,
    )


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
    left = wait_until(
        lambda: (
            {int(p.name) for p in exited.iterdir()}
            if exited
            else workers - program.members()
        ),
        lambda: f"a worker leaves\n{program.output()}",
        timeout=15,
    )
    (leaver,) = left
    if exited:
        sessions.wait_for(
            lambda ids: not own[leaver] & ids, "worker_exit ends them", EXIT_PAUSE / 2
        )
        assert leaver in program.members(), "sessions ended only with the process"
    wait_until(lambda: leaver not in program.members(), "the leaver exits", timeout=60)
    sessions.wait_for(lambda ids: not own[leaver] & ids, "the leaver's sessions end")
    startup = results[0]["startup"]
    if startup and startup["pid"] == program.pid:
        time.sleep(0.2)  # a goodbye sent on the master's socket takes effect now
        assert startup["backend"] in sessions.ids(), (
            "the leaving worker ended the master's session"
        )


def forget_queue(client: Any, queue: str) -> None:
    """Delete what kombu keeps in Redis for a queue (the queue itself is empty)."""
    with client.connection_for_write() as connection:
        connection.default_channel.client.delete(
            queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"
        )


# Celery ----------------------------------------------------------------------------


def run_celery(
    spawn: Callable[..., Program], sessions: Sessions, pool: str, tasks: int
) -> tuple[Program, list[dict[str, Any]]]:
    """A Celery worker with ``pool``, and the reports of ``tasks`` tasks (at
    least one per prefork process), sent eight at a time."""
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
    args = [
        sys.executable,
        "-m",
        "celery",
        "--app=tests.recipes.celery_app",
        "worker",
        f"--pool={pool}",
        f"--concurrency={WORKERS}",
        f"--queues={queue}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
    ]
    if pool == "prefork":  # pool processes exit, the main one stays
        args += ["--max-tasks-per-child=5", "-O", "fair"]
    program = spawn(
        args, env={"SAPOOL_RECIPES_QUEUE": queue, "SAPOOL_REDIS_URL": REDIS_URL}
    )
    client = Celery("recipes-client", broker=REDIS_URL, backend=REDIS_URL)
    results: list[dict[str, Any]] = []
    processes = WORKERS if pool == "prefork" else 1
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(results) < tasks or len({r["pid"] for r in results}) < processes:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"tasks not served by {processes} processes:\n{program.output()}"
                )
            pending = [
                client.send_task("tests.recipes.celery_app.backend", queue=queue)
                for _ in range(8)
            ]
            for result in pending:

                def ready(result: Any = result) -> bool:
                    program.check_running()
                    sessions.sample()
                    return bool(result.ready())

                wait_until(
                    ready,
                    lambda: f"task run:\n{program.output()}",
                    timeout=max(0.0, deadline - time.monotonic()),
                )
                results.append(result.get(timeout=5))
                result.forget()
    finally:
        forget_queue(client, queue)
        client.close()
    return program, results

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

Marked ``faults``: the forking servers' scenarios belong to the fault suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.recipes.settings import POOL_SIZE
from tests.support.private_server import free_port
from tests.support.recipes import (
    PER_PROCESS,
    ROOT,
    WORKERS,
    Program,
    Sessions,
    check_forked_workers,
    drive,
    need_module,
    retire_one_worker,
    run_celery,
    sessions_by_process,
    wait_until_serving,
)
from tests.support.server import VENDOR
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.direct_server(
        reason="each recipe tells worker processes apart by server session"
    ),
    pytest.mark.faults,
]


# gunicorn ------------------------------------------------------------------------


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
    wait_until(
        lambda: (
            len(program.members() - {program.pid}) >= WORKERS
            and not (
                lazy_apps and program.log.read_text().count("WSGI app 0") < WORKERS + 1
            )
        ),
        lambda: f"the retired worker is replaced:\n{program.output()}",
        timeout=15,
        interval=0.05,
    )
    program.stop()
    sessions.wait_none()


# Celery ----------------------------------------------------------------------------


def test_celery_prefork(spawn: Callable[..., Program], sessions: Sessions) -> None:
    """Prefork pool processes, each disposing inherited pools in worker_process_init."""
    program, results = run_celery(spawn, sessions, "prefork", 16)
    used = check_forked_workers(
        program, sessions, results, loaded_in_master=True, recycled=True
    )
    # Celery's Django fixup closes connections around each task: back to the
    # pool, so a pool process runs all its tasks on one session.
    assert all(len(ids) == 1 for ids in used.values()), used
    program.stop()
    sessions.wait_none()


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_celery_threads_and_gevent(
    spawn: Callable[..., Program], sessions: Sessions, pool: str
) -> None:
    """One process, tasks on threads or greenlets: each its own Django wrapper,
    all on the process's one pool, each connection back after every task."""
    if pool == "gevent":
        need_module("gevent")
    tasks = 48
    program, results = run_celery(spawn, sessions, pool, tasks)
    (pid,) = {result["pid"] for result in results}
    assert pid == program.pid
    pools = {result["pool"] for result in results}
    assert len(pools) == 1, "the pool is not rebuilt per task"
    # One pool's worth of sessions, reused task after task (the import gave
    # its connection back, and the tasks reuse it too).
    assert sessions.peak <= PER_PROCESS
    assert len({result["backend"] for result in results}) <= PER_PROCESS
    assert not sessions.idle_in_transaction()
    # Back after every task: 48 tasks, WORKERS at a time, on a 2 + 1 pool
    # (one slot held by the import) never wait out the pool's timeout.
    print(
        f"\n[fault] celery {pool} pool: tasks={len(results)}, errors=0, "
        f"concurrency={WORKERS}, pools=1, server_sessions_max={sessions.peak}"
    )
    program.stop()
    sessions.wait_none()


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

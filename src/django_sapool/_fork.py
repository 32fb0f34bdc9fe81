"""Fork: the one place that knows which process owns what.

A forked child must never use, close or even garbage-collect what it
inherited: the sockets are the parent's (and mysqlclient sends COM_QUIT when
a connection is collected). So the child keeps every inherited object alive,
untouched, and the modules that hold per-process state (the pool registry,
the counters, the watchdog, the reaper, the leak watcher, the wrappers)
start afresh through callbacks registered with ``on_child``.

Fork is noticed by ``os.register_at_fork`` and, for forks made from C
(uWSGI), by ``check()`` at every entry point. A child forked from C may have
several threads arrive at once: the first makes the move, once, and the
others wait for it to finish. Objects that live in one process record
``os.getpid()`` when made and ask ``inherited(pid)``: this module is the only
place a pid is compared, but for the wrapper's checkout, return and cursor,
which run per request and compare ``pool.pid != getpid()`` inline. It
imports nothing from the package.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import weakref
from collections.abc import Callable
from os import getpid
from typing import Any

logger = logging.getLogger("django_sapool")

#: The process the package's state belongs to; a child sets it last in its move.
_pid = os.getpid()
#: A lock per process for its move out of the parent, made by the child's
#: first thread to notice (dict.setdefault is atomic): no thread of the
#: parent can hold it. Reentrant for callbacks that call back in.
_move_locks: dict[int, threading.RLock] = {}
#: The pid whose move is under way (a callback calling back in must not wait).
_moving = 0
#: Connections lent right now, by id, so the fork hooks can pin them (see
#: _before_fork). Weak references: a borrower collected without giving its
#: connection back leaves a dead entry, skipped (and dropped) at the next fork.
#: A dict and not a WeakSet: a store and a pop per loan, no calls of ours.
lent: dict[int, weakref.ref[Any]] = {}
_pinned: list[Any] = []
#: Everything this process inherited from its parents: kept alive, never touched.
_inherited: list[Any] = []
_callbacks: list[Callable[[], None]] = []


def inherited(pid: int) -> bool:
    """Was the object recorded with ``pid`` made by another process (a parent)?"""
    return pid != getpid()  # getpid, not os.getpid: one lookup less per call


def check() -> None:
    """In a forked child, finish its move out of the parent before going on.

    Every entry point calls this first. The first thread to notice the fork
    makes the move, once; the others wait for it, so none can see the
    parent's state or a half-made move.
    """
    pid = getpid()
    if _pid != pid:
        _move_to(pid)


def on_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in a child once, during its move out of the parent.

    Callbacks run in the order they were registered, and no other thread of
    the child gets past ``check()`` until every one has returned.
    """
    _callbacks.append(callback)


def keep_forever(*objects: Any) -> None:
    """Hold objects from a parent process for the rest of this process's life.

    Including its exit: interpreter shutdown clears module globals, and a
    mysqlclient connection freed then would still send COM_QUIT on the
    parent's socket. A reference nobody owns keeps them from ever being freed.
    """
    for obj in objects:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    _inherited.extend(objects)


def _move_to(pid: int) -> None:
    global _move_locks, _moving, _pid
    lock = _move_locks.setdefault(pid, threading.RLock())
    with lock:
        if _pid == pid or _moving == pid:  # done, or a callback called back
            return
        _move_locks = {pid: lock}  # a later child's pid may reuse an old one
        _moving = pid
        try:
            # The parent's loans, never to be returned here (a fork from C
            # had no _before_fork to pin them: pin them now).
            keep_forever(list(_pinned), [ref() for ref in list(lent.values())])
            _pinned.clear()
            lent.clear()
            logger.info(
                "Fork detected: process %d forgot its parent's pools",
                pid,
                # The fields of _events.log_fields(); this module imports nothing.
                extra={"sapool_event": "fork_detected", "sapool_alias": None},
            )
            for callback in _callbacks:
                try:
                    callback()
                except Exception:  # the others must run all the same
                    logger.exception("Fork detected: a fork callback failed")
        finally:
            _moving = 0
        _pid = pid  # last: threads that see it skip the lock


def _before_fork() -> None:
    # In the child, threads other than the forking one vanish and the wrappers
    # in their thread-local storage become garbage. If the collector freed a
    # borrowed connection before the child's move, SQLAlchemy would return it
    # to the parent's pool, taking a lock a vanished thread may hold. Pin.
    pinned = []
    for key, ref in list(lent.items()):
        connection = ref()
        if connection is not None:
            pinned.append(connection)
        elif lent.get(key) is ref:  # collected without being given back
            lent.pop(key, None)
    _pinned[:] = pinned


def _after_fork_in_parent() -> None:
    _pinned.clear()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=check,
)

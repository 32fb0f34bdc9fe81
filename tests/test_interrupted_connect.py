"""A signal during the probe's blocking connect must not wedge the gate.

psycopg2 and mysqlclient connect in C, retrying the wait when a signal comes;
the Python handler (Celery's soft time limit, SIGINT) runs once the connect
returns, and raises from the first Python call after it. Whatever that call
was meant to record, the probe's slot must be freed, or every later checkout
fails with ServerUnavailable until the process restarts.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import OperationalError

from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import Observer, backend_id
from tests.support.stand_ins import Interrupted
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults]


class SoftTimeLimitExceeded(Exception):
    """Like Celery's: an Exception, raised by a SIGUSR1 handler."""


@pytest.fixture
def raise_on_alarm() -> Iterator[list[type[BaseException]]]:
    """SIGALRM raises the exception put in the list (in the test's thread)."""
    raised: list[type[BaseException]] = []

    def handler(signum: int, frame: object) -> None:
        raise raised[0]

    previous = signal.signal(signal.SIGALRM, handler)
    yield raised
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("raised", [Interrupted, SoftTimeLimitExceeded])
def test_a_signal_during_the_probes_blocking_connect_does_not_wedge_the_gate(
    pool_alias: PoolAliasFactory,
    proxy: TcpProxy,
    observer: Observer,
    raise_on_alarm: list[type[BaseException]],
    raised: type[BaseException],
) -> None:
    alias = pool_alias(
        pool_size=2,
        unreachable_wait=0.3,  # shorter than any take-over of a lost probe
        settings={"HOST": "127.0.0.1", "PORT": str(proxy.port)},
        options={"connect_timeout": 2},
    )
    proxy.refuse()
    refused = alias.wrapper()
    with pytest.raises(OperationalError):
        backend_id(refused)  # the gate closes
    refused.close()

    proxy.stall()  # the next connect blocks until connect_timeout
    raise_on_alarm.append(raised)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    probe = alias.wrapper()
    # The handler raises in the first Python code run after the connect: ours,
    # or now and then a weakref callback (a dying Thread leaving threading's
    # WeakSet), where the exception is swallowed and the connect's timeout
    # comes out instead. Either way the gate must not be wedged.
    swallowed: list[Any] = []
    pytest_hook, sys.unraisablehook = sys.unraisablehook, swallowed.append
    try:
        with pytest.raises((raised, OperationalError)) as caught:
            backend_id(probe)  # the probe: its connect is interrupted
    finally:
        sys.unraisablehook = pytest_hook
    assert caught.type is raised or any(
        isinstance(unraisable.exc_value, raised) for unraisable in swallowed
    ), (caught, swallowed)
    swallowed.clear()
    probe.close()

    proxy.forward()  # the server is back: the next checkout connects
    wrapper = alias.wrapper()
    session = backend_id(wrapper)
    wrapper.close()
    assert observer.alive([session]) == {session}
